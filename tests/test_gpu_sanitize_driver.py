"""The GPU sanitizer driver (tests/gpu_sanitize.py, run under compute-sanitizer by benchmarks/gpu_check.sh) on the
CPU: it must keep running and pass there, so it is ready whenever a GPU is lent."""
import gpu_sanitize


def test_sanitizer_driver_passes_on_the_cpu():
    gpu_sanitize.DEV = "cpu"
    gpu_sanitize.failures.clear()
    gpu_sanitize.checks = 0
    gpu_sanitize.run_all()
    gpu_sanitize.run_foreach()
    assert gpu_sanitize.failures == []
    assert gpu_sanitize.checks > 1000
