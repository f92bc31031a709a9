"""Memory a call costs: the bytes autograd saves for backward, and the peak a call allocates above its inputs
(CUDA: the caching allocator's peak; CPU: a forkserver child's peak-RSS rise)."""
from __future__ import annotations

import gc
import multiprocessing
import os
import traceback
from typing import Any, Callable, Dict, NamedTuple, Optional

import torch

from .log import progress


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages saved for backward while ``fn()`` runs (outputs kept alive meanwhile)."""
    seen: Dict[Any, int] = {}

    def pack(t: torch.Tensor):
        try:
            st = t.untyped_storage()
            seen[(t.device.type, st.data_ptr())] = st.nbytes()
        except Exception:  # noqa: BLE001  (e.g. a tensor without storage)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_child(make: Callable[..., Callable[[], Any]], params: Dict[str, Any], threads: int) -> int:
    """Runs in the fresh child process: build inputs, warm up once, measure one call's peak RSS rise."""
    torch.set_num_threads(threads)
    run = make(device="cpu", **params)
    out = run()
    del out
    gc.collect()
    if not _reset_hwm():
        raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs not writable)")
    base = _status_kb("VmRSS")
    out = run()
    peak = _status_kb("VmHWM")
    del out
    return max(0, peak - base) * 1024


_POOL_CTX = None


def _mp_context():
    global _POOL_CTX
    if _POOL_CTX is None:
        # glibc: mmap (and so unmap on free) every allocation >= 64 KiB, with no dynamic threshold growth, so a
        # freed tensor's pages leave the process and RSS tracks live tensors. Read by the forkserver at start.
        # The forkserver gets this process's sys.path (benchmarks/ is on it) and preloads the harness package,
        # so each child unpickles _child_entry (harness.memory) and the scenario's module-level ``make`` fast.
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
        os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
        try:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["torch", "safe_ops", "harness"])
        except ValueError:
            ctx = multiprocessing.get_context("spawn")
        _POOL_CTX = ctx
    return _POOL_CTX


class _ChildResult(NamedTuple):
    """What the peak-memory child sends back: the peak in bytes, or (peak_bytes None) its error and traceback."""

    peak_bytes: Optional[int]
    error: str = ""


def _child_entry(conn, make, params, threads):
    try:
        conn.send(_ChildResult(_peak_child(make, params, threads)))
    except BaseException as e:  # noqa: BLE001
        conn.send(_ChildResult(None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def peak_memory(make: Callable[..., Callable[[], Any]], *, device: Any = "cpu", timeout_s: float = 300.0,
                **params: Any) -> int:
    """Peak bytes one call of ``make(device, **params)()`` allocates above its inputs; see the harness package
    docstring."""
    dev = torch.device(device)
    if dev.type == "cuda":
        run = make(device=device, **params)
        out = run()
        del out
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out, run
        gc.collect()
        torch.cuda.empty_cache()
        return int(peak)
    ctx = _mp_context()
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child_entry, args=(child, make, params, torch.get_num_threads()))
    p.start()
    child.close()
    result: Optional[_ChildResult] = None
    if parent.poll(timeout_s):
        try:
            result = parent.recv()
        except EOFError:
            result = None
    p.join(5)
    if p.is_alive():
        p.kill()
        p.join()
    if result is None:
        progress(f"  peak_memory: child for {make.__name__} {params} died (exit {p.exitcode}) or timed out")
        return -1
    if result.peak_bytes is None:
        progress(f"  peak_memory: child for {make.__name__} {params} failed: {result.error}")
        return -1
    return int(result.peak_bytes)

