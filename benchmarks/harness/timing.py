"""Timing: median-of-reps wall/CUDA-event time of one method (``time_fn``) or several round-robin
(``time_interleaved``), and ``cold_compile`` so that torch.compile's first call shows a real compile."""
from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch


@dataclass
class Stats:
    """Timing of repeated calls, in seconds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    reps: int
    samples: List[float] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, samples: List[float]) -> "Stats":
        s = sorted(samples)
        if len(s) >= 4:
            q = statistics.quantiles(s, n=4, method="inclusive")
            q1, q3 = q[0], q[2]
        else:
            q1, q3 = s[0], s[-1]
        return cls(statistics.median(s), q1, q3, s[0], s[-1], len(s), list(samples))

    @property
    def iqr_pct(self) -> float:
        """Interquartile range as a percentage of the median (the spread we report)."""
        return 100.0 * (self.q3 - self.q1) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["samples"] = [round(x, 9) for x in self.samples]
        return d


def sync(device: Any) -> None:
    """Wait for the device to finish queued work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], Any],
    *,
    device: Any = "cpu",
    warmup: int = 1,
    reps: int = 10,
    max_time_s: Optional[float] = None,
    min_reps: int = 3,
) -> Stats:
    """Median-of-reps timing of ``fn()``; see the harness package docstring. The result of each call is dropped
    (freed) inside the timed region, as a caller would drop it. On CUDA each sample is CUDA-event time over
    enough back-to-back calls to fill ~2 ms (no host sync between them), divided by their number, so the
    launch and synchronisation latency of a lone call does not count against a short kernel."""
    for _ in range(warmup):
        fn()
    sync(device)
    if torch.device(device).type == "cuda":
        return _time_cuda(fn, reps, max_time_s, min_reps)
    samples: List[float] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        spent = 0.0
        for i in range(reps):
            sync(device)
            t0 = time.perf_counter()
            out = fn()
            del out
            sync(device)
            dt = time.perf_counter() - t0
            samples.append(dt)
            spent += dt
            if max_time_s is not None and spent > max_time_s and i + 1 >= min_reps:
                break
    finally:
        if was_enabled:
            gc.enable()
    return Stats.of(samples)


def _time_cuda(fn: Callable[[], Any], reps: int, max_time_s: Optional[float], min_reps: int) -> Stats:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = max(time.perf_counter() - t0, 1e-6)
    inner = int(min(100, max(1, 2e-3 // est)))
    samples: List[float] = []
    spent = 0.0
    for i in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        dt = start.elapsed_time(end) / 1e3 / inner
        samples.append(dt)
        spent += dt * inner
        if max_time_s is not None and spent > max_time_s and i + 1 >= min_reps:
            break
    return Stats.of(samples)


def time_interleaved(fns: Dict[str, Callable[[], Any]], *, device: Any = "cpu", reps: int = 7,
                     max_time_s: Optional[float] = None, min_reps: int = 3) -> Dict[str, Stats]:
    """Time several methods round-robin: each round calls every method once (CUDA: a batch, as time_fn), the
    order rotating from round to round. A load change on a shared machine then hits every method alike, so
    the ratios between them stay meaningful. ``max_time_s`` bounds the time per method."""
    names = list(fns)
    samples: Dict[str, List[float]] = {k: [] for k in names}
    cuda = torch.device(device).type == "cuda"
    inner = {k: 1 for k in names}
    if cuda:
        for k in names:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fns[k]()
            torch.cuda.synchronize()
            inner[k] = int(min(100, max(1, 2e-3 // max(time.perf_counter() - t0, 1e-6))))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    spent = 0.0
    try:
        for r in range(reps):
            shift = r % len(names)
            for k in names[shift:] + names[:shift]:
                fn = fns[k]
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(inner[k]):
                        fn()
                    end.record()
                    end.synchronize()
                    dt = start.elapsed_time(end) / 1e3 / inner[k]
                    spent += dt * inner[k]
                else:
                    t0 = time.perf_counter()
                    out = fn()
                    del out
                    dt = time.perf_counter() - t0
                    spent += dt
                samples[k].append(dt)
            if max_time_s is not None and spent > max_time_s * len(names) and r + 1 >= min_reps:
                break
    finally:
        if was_enabled:
            gc.enable()
    return {k: Stats.of(v) for k, v in samples.items()}


_COLD_DIR: Optional[str] = None


def cold_compile() -> None:
    """Make torch.compile start cold in this process: a fresh, empty inductor cache directory (removed at
    exit; the peak-memory children inherit it, so they reuse the parent's kernels) and the FX-graph and
    AOT-autograd caches off, so a compiled method's first call shows a real compile, not a cache hit from an
    earlier run. Call it before the first compile."""
    global _COLD_DIR
    if _COLD_DIR is None:
        import atexit
        import shutil
        import tempfile

        _COLD_DIR = tempfile.mkdtemp(prefix="safe_ops_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = _COLD_DIR
        atexit.register(shutil.rmtree, _COLD_DIR, True)
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = False
        if hasattr(inductor_config, "fx_graph_remote_cache"):
            inductor_config.fx_graph_remote_cache = False
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch._functorch.config as functorch_config

        if hasattr(functorch_config, "enable_autograd_cache"):
            functorch_config.enable_autograd_cache = False
    except Exception:  # noqa: BLE001
        pass

