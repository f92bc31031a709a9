"""Session-wide test setup."""
import torch


def pytest_sessionfinish(session, exitstatus):
    # dynamo keeps weak references to the code objects it compiled (the test functions, safe_ops' wrappers),
    # whose callbacks fire during interpreter shutdown, after torch's module globals are gone, and print an
    # AttributeError traceback ("'NoneType' object has no attribute 'pop'") that reads like a failure. Dropping
    # those references while the interpreter is whole means no callback is left to fire (private API: guarded).
    torch._dynamo.reset()
    cleanup = getattr(getattr(torch._dynamo.utils, "CleanupManager", None), "instance", None)
    if cleanup is not None and hasattr(cleanup, "clear"):
        cleanup.clear()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda_on_host: the CUDA kernels' bodies executed on the host over a simulated grid (no GPU needed)"
    )
