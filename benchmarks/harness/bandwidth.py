"""Bandwidth: GB/s of a measured time, and the machine's streaming bandwidth measured now (the yardstick every
bandwidth figure of a run is compared with), with a probe for another process holding a core."""
from __future__ import annotations

from typing import Any, Dict

import torch

from .timing import time_fn, time_interleaved


def gbps(nbytes: float, seconds: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes/s)."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def stream_bandwidth(device: Any = "cpu", numel: int = 16 << 20, dtype=torch.float32,
                     reps: int = 15) -> Dict[str, Any]:
    """The machine's streaming bandwidth now: ``dst.copy_(src)`` (2 passes) and ``torch.add(a, b, out=c)``
    (3 passes) into existing buffers, GB/s from the median time. ``best`` is the larger of the two."""
    a = torch.randn(numel, device=device, dtype=dtype)
    b = torch.randn(numel, device=device, dtype=dtype)
    c = torch.empty(numel, device=device, dtype=dtype)
    esize = a.element_size()
    t_copy = time_fn(lambda: c.copy_(a), device=device, warmup=3, reps=reps)
    t_add = time_fn(lambda: torch.add(a, b, out=c), device=device, warmup=3, reps=reps)
    copy_bw = gbps(2 * numel * esize, t_copy.median)
    add_bw = gbps(3 * numel * esize, t_add.median)
    out = {"numel": numel, "bytes": numel * esize, "copy_": copy_bw, "add_out": add_bw,
           "best": max(copy_bw, add_bw), "copy_time": t_copy.to_dict(), "add_out_time": t_add.to_dict()}
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu" and threads > 1:
        out["contention"] = contention_probe(threads)
    return out


def contention_probe(threads: int, numel: int = 1 << 20) -> Dict[str, float]:
    """copy_ of 4 MB with all threads and with one, interleaved. On a machine where another process holds a
    core, the multi-threaded copy waits for its descheduled thread (time slices of ms) and comes out SLOWER
    than one thread: then mid-size timings of this run measure the scheduler, not the kernels."""
    a = torch.randn(numel)
    c = torch.empty(numel)

    def with_threads(t):
        def f():
            torch.set_num_threads(t)
            c.copy_(a)
        return f

    try:
        r = time_interleaved({"all": with_threads(threads), "one": with_threads(1)}, reps=15)
    finally:
        torch.set_num_threads(threads)
    all_bw, one_bw = gbps(2 * numel * 4, r["all"].median), gbps(2 * numel * 4, r["one"].median)
    return {"copy_4MB_all_threads": all_bw, "copy_4MB_one_thread": one_bw, "contended": all_bw < one_bw}

