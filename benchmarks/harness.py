"""The one benchmark harness every ``benchmarks/bench_*.py`` script uses.

API (everything a scenario script needs)::

    from harness import Context, Stats, time_fn, saved_tensor_bytes, peak_memory, gbps, progress

    time_fn(fn, device="cpu", warmup=1, reps=10, max_time_s=None) -> Stats
    time_interleaved({name: fn}, device="cpu", reps=7, max_time_s=None) -> {name: Stats}   # round-robin
        Call ``fn()`` ``warmup`` times untimed, then up to ``reps`` times timed (the Python GC is collected
        before and disabled during the reps). Stops early, after at least 3 reps, once ``max_time_s`` of timed
        calls are spent. CPU: wall time per call. CUDA: CUDA-event time of back-to-back calls filling ~2 ms,
        divided by their number. Stats carries the median, the quartiles (IQR), min and max, in seconds.
        time_interleaved calls the methods round-robin (rotating order), so a load change on a shared
        machine hits all of them alike: use it for ratios.

    saved_tensor_bytes(fn) -> int
        Bytes of the distinct storages autograd saves for backward while ``fn()`` runs (via
        ``torch.autograd.graph.saved_tensors_hooks``). Note: safe_ops' in-place variants take the safe (copy)
        branch while such hooks are active, so measure the functional op.

    peak_memory(make, device="cpu", **params) -> int
        Peak bytes allocated while one call of a method runs, above what was live just before it (its inputs).
        ``make`` must be a MODULE-LEVEL function ``make(device=..., **params) -> run``: it allocates the inputs
        and returns a zero-argument ``run`` that performs the method once and returns its outputs (kept alive
        until the peak is read). ``run`` is called once to warm up (torch.compile compiles there), then once
        measured.
        - CUDA: in this process, ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``.
        - CPU: in a fresh subprocess (a forkserver child with torch and safe_ops preloaded; glibc told to
          mmap every allocation >= 64 KiB so freed memory leaves the process): the rise of the child's peak RSS
          (VmHWM, reset via /proc/self/clear_refs) over its RSS just before the measured call.
        Returns -1 if the child failed (its error is printed).

    gbps(nbytes, seconds) -> float                 # 1e9 bytes per second
    stream_bandwidth(device, numel) -> dict        # copy_ and torch.add(a, b, out=c) GB/s, measured now
    progress(msg)                                  # one line to stdout with the elapsed time, flushed
    machine_name(device) -> str                    # "cpu-2core-amd-epyc", "cuda-nvidia-h100-80gb-hbm3"

    class Context:   # one per run; run.py builds it and passes it to each script's ``run(ctx)``
        ctx.device, ctx.full (--all given), ctx.quick (--quick: tiny sizes, smoke test)
        ctx.bandwidth                              # stream_bandwidth() of this run, {"copy_": GB/s, ...}
        ctx.time(fn, **kw) -> Stats                # time_fn with the run's defaults
        ctx.peak(make, **params) -> int            # peak_memory on ctx.device
        ctx.bench(scenario, make, method, mode, params, memory=True, nbytes=None) -> record
            # the usual step: make(device=, method=, mode=, **params) -> run; times the first call
            # (first_call_s, where torch.compile compiles), then ctx.time(run); peak in a fresh child; records.
        ctx.bench_group(scenario, make, methods, mode, params, memory=True, nbytes={method: bytes},
                        extra={method: {field: value}}, **fields) -> {method: record}
            # the same for several methods, timed round-robin (time_interleaved): ratios from one condition
        ctx.ratio(scenario, slower_method, faster_method, mode, key="time"|"peak", **params) -> float|None
        ctx.record(scenario, method, mode, *, time=Stats|None, peak_bytes=None, saved_bytes=None,
                   gbps=None, params=None, note="", **extra) -> dict
        ctx.target(id, description, measured, threshold, *, higher_is_better=True, detail="", tol=0.0)
            # a ratio target, marked met/missed in the table; tol: relative slack (e.g. 0.02 for "no more memory")
        ctx.errors                                 # list of {"scenario", "error"}: shown in the table
        ctx.find(scenario, method, mode) -> record dict or None
        ctx.save() -> paths                        # results/<machine>.json, .md table, .png plot

A scenario script ``benchmarks/bench_<name>.py`` defines ``SCENARIO = "<label>"`` (the heading in the table,
e.g. "7 guard decision"), ``ORDER = <int>`` (position in run.py; 1-6 are taken), and ``run(ctx)`` which
measures and calls ``ctx.record``/``ctx.bench_group``/``ctx.target``; run.py finds every ``bench_*.py`` with a
``run`` and runs it (``--only <name>`` picks some). ``if __name__ == "__main__": main_for(run, "<name>")`` lets
it run alone (``python benchmarks/bench_<name>.py [--quick] [--device cuda]``, results to
``results/<machine>.<name>.*``). Scripts import this module as ``harness`` (benchmarks/ is on sys.path when a
script in it runs); a ``make`` given to ``peak_memory`` must be a module-level function of such a script so the
child process can import it. ``mode`` is "fwd", "fwd+bwd", or another short label. Sizes: use ``ctx.big``
(16M elements, 64K with --quick) and keep the default run short (the whole default suite must stay < 5 min on
the 2-core CPU); put larger sweeps behind ``ctx.full``.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
_T0 = time.perf_counter()

MODES = ("fwd", "fwd+bwd")


# --------------------------------------------------------------------------------------------- progress
def progress(msg: str) -> None:
    """Print one progress line, prefixed by the seconds since the harness was imported."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------- timing
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
    """Median-of-reps timing of ``fn()``; see the module docstring. The result of each call is dropped
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


def gbps(nbytes: float, seconds: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes/s)."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


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


# --------------------------------------------------------------------------------------------- saved bytes
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


# --------------------------------------------------------------------------------------------- peak memory
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
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
        os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
        try:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["torch", "safe_ops", "harness"])
        except ValueError:
            ctx = multiprocessing.get_context("spawn")
        _POOL_CTX = ctx
    return _POOL_CTX


def _child_entry(conn, make, params, threads):
    try:
        conn.send(("ok", _peak_child(make, params, threads)))
    except BaseException as e:  # noqa: BLE001
        conn.send(("err", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def peak_memory(make: Callable[..., Callable[[], Any]], *, device: Any = "cpu", timeout_s: float = 300.0,
                **params: Any) -> int:
    """Peak bytes one call of ``make(device, **params)()`` allocates above its inputs; see the module docstring."""
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
    result = None
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
    status, value = result
    if status != "ok":
        progress(f"  peak_memory: child for {make.__name__} {params} failed: {value}")
        return -1
    return int(value)


# --------------------------------------------------------------------------------------------- bandwidth
def stream_bandwidth(device: Any = "cpu", numel: int = 16 << 20, dtype=torch.float32, reps: int = 15) -> Dict[str, float]:
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


# --------------------------------------------------------------------------------------------- machine
def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: Any = "cpu") -> str:
    """Short machine label used for the results file name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "cuda-" + _slug(torch.cuda.get_device_name(dev))
    return f"cpu-{os.cpu_count()}core-{_slug(cpu_model())}"


def machine_info(device: Any = "cpu") -> Dict[str, Any]:
    dev = torch.device(device)
    info: Dict[str, Any] = {
        "name": machine_name(device),
        "device": str(dev),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(gpu=p.name, gpu_memory_bytes=p.total_memory, cuda=torch.version.cuda,
                    capability=f"{p.major}.{p.minor}")
    return info


# --------------------------------------------------------------------------------------------- context
class Context:
    """One benchmark run: settings, the records collected so far, and the run's streaming bandwidth."""

    def __init__(self, device: str = "cpu", full: bool = False, quick: bool = False,
                 results_dir: str = RESULTS_DIR, reps: Optional[int] = None, max_time_s: Optional[float] = None,
                 name: Optional[str] = None):
        self.device = device
        self.full = full
        self.quick = quick
        self.results_dir = results_dir
        self.reps = reps if reps is not None else (3 if quick else 5)
        self.max_time_s = max_time_s if max_time_s is not None else (1.0 if quick else (4.0 if full else 1.5))
        self.records: List[Dict[str, Any]] = []
        self.targets: List[Dict[str, Any]] = []
        self.info = machine_info(device)
        self.name = name or self.info["name"]
        self.started = time.time()
        self._bandwidth: Optional[Dict[str, float]] = None
        self.scenarios_run: List[str] = []
        self.errors: List[Dict[str, str]] = []

    # sizes --------------------------------------------------------------------------------------------
    @property
    def big(self) -> int:
        """The "16M float32" size of the issue figures (64 Ki elements with --quick)."""
        return 1 << 16 if self.quick else 16 << 20

    @property
    def bandwidth(self) -> Dict[str, float]:
        if self._bandwidth is None:
            progress(f"streaming bandwidth on {self.device} ({self.big} float32) ...")
            self._bandwidth = stream_bandwidth(self.device, self.big)
            progress(f"  copy_ {self._bandwidth['copy_']:.1f} GB/s, add(out=) {self._bandwidth['add_out']:.1f} GB/s")
            c = self._bandwidth.get("contention")
            if c:
                progress(f"  contention probe, copy_ 4 MB: {c['copy_4MB_all_threads']:.1f} GB/s with "
                         f"{torch.get_num_threads()} threads, {c['copy_4MB_one_thread']:.1f} GB/s with one"
                         + ("  -> CONTENDED: another process holds a core; consider --threads 1"
                            if c["contended"] else ""))
        return self._bandwidth

    # measuring ----------------------------------------------------------------------------------------
    def time(self, fn: Callable[[], Any], **kw: Any) -> Stats:
        kw.setdefault("device", self.device)
        kw.setdefault("reps", self.reps)
        kw.setdefault("max_time_s", self.max_time_s)
        return time_fn(fn, **kw)

    def peak(self, make: Callable[..., Callable[[], Any]], **params: Any) -> int:
        return peak_memory(make, device=self.device, **params)

    def bench(self, scenario: str, make: Callable[..., Callable[[], Any]], method: str, mode: str,
              params: Dict[str, Any], *, memory: bool = True, note: str = "", nbytes: Optional[float] = None,
              **extra: Any) -> Dict[str, Any]:
        """Time and (optionally) peak-measure one (scenario, method, mode) and record it.

        ``make(device=..., method=method, mode=mode, **params) -> run`` (module level, see peak_memory). The
        first call is timed on its own (``first_call_s``: torch.compile's compile time lands there), then
        ``ctx.time(run)``; ``nbytes`` (bytes the method must move) gives ``gbps``."""
        run = make(device=self.device, method=method, mode=mode, **params)
        sync(self.device)
        t0 = time.perf_counter()
        out = run()
        sync(self.device)
        first = time.perf_counter() - t0
        del out
        stats = self.time(run, warmup=0)  # the first call above was the warm-up
        del run
        gc.collect()
        peak = self.peak(make, method=method, mode=mode, **params) if memory else None
        bw = gbps(nbytes, stats.median) if nbytes else None
        return self.record(scenario, method, mode, time=stats, peak_bytes=peak, gbps=bw, params=dict(params),
                           note=note, first_call_s=first, **extra)

    def bench_group(self, scenario: str, make: Callable[..., Callable[[], Any]], methods: List[str], mode: str,
                    params: Dict[str, Any], *, memory: bool = True, nbytes: Optional[Dict[str, float]] = None,
                    extra: Optional[Dict[str, Dict[str, Any]]] = None, **common: Any) -> Dict[str, Dict[str, Any]]:
        """Like ``bench`` for several methods of one scenario and mode, timed round-robin
        (``time_interleaved``) so their ratios come from the same conditions. Builds every method's inputs
        first (they are alive together), times each first call (``first_call_s``; torch.compile compiles
        there), then the rounds, then measures each peak in its own fresh child. Returns method -> record."""
        runs: Dict[str, Callable[[], Any]] = {}
        first: Dict[str, float] = {}
        run = None
        for m in methods:
            try:
                run = make(device=self.device, method=m, mode=mode, **params)
                sync(self.device)
                t0 = time.perf_counter()
                out = run()
                sync(self.device)
                first[m] = time.perf_counter() - t0
                del out
                runs[m] = run
            except Exception as e:  # noqa: BLE001  (e.g. torch.compile unavailable): report, go on
                progress(f"  {m} ({mode}) failed: {type(e).__name__}: {str(e)[:300]}")
                self.errors.append({"scenario": f"{scenario} / {m} / {mode}", "error": f"{type(e).__name__}: {e}"})
                run = None
        methods = [m for m in methods if m in runs]
        progress(f"  timing {len(methods)} methods round-robin ({mode}) ...")
        stats = time_interleaved(runs, device=self.device, reps=self.reps, max_time_s=self.max_time_s)
        del runs, run
        gc.collect()
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()
        recs = {}
        for m in methods:
            peak = self.peak(make, method=m, mode=mode, **params) if memory else None
            bw = gbps(nbytes[m], stats[m].median) if nbytes and nbytes.get(m) else None
            kw = dict(common)
            kw.update((extra or {}).get(m, {}))
            recs[m] = self.record(scenario, m, mode, time=stats[m], peak_bytes=peak, gbps=bw, params=dict(params),
                                  first_call_s=first[m], **kw)
        return recs

    def ratio(self, scenario: str, slower: str, faster: str, mode: str, key: str = "time",
              **params: Any) -> Optional[float]:
        """``slower``'s median time (or peak bytes with key="peak") over ``faster``'s; None if missing."""
        a, b = self.find(scenario, slower, mode, **params), self.find(scenario, faster, mode, **params)
        if a is None or b is None:
            return None
        if key == "time":
            if not a["time"] or not b["time"]:
                return None
            return a["time"]["median"] / b["time"]["median"]
        x, y = a.get("peak_bytes"), b.get("peak_bytes")
        if x is None or y is None or x < 0 or y < 0:
            return None
        return x / max(y, 1)

    # recording ----------------------------------------------------------------------------------------
    def record(self, scenario: str, method: str, mode: str, *, time: Optional[Stats] = None,
               peak_bytes: Optional[int] = None, saved_bytes: Optional[int] = None, gbps: Optional[float] = None,
               params: Optional[Dict[str, Any]] = None, note: str = "", **extra: Any) -> Dict[str, Any]:
        rec: Dict[str, Any] = {"scenario": scenario, "method": method, "mode": mode, "params": params or {},
                               "time": time.to_dict() if time is not None else None, "peak_bytes": peak_bytes,
                               "saved_bytes": saved_bytes, "gbps": gbps, "note": note}
        rec.update(extra)
        self.records.append(rec)
        parts = [f"{scenario} | {method} | {mode}"]
        if time is not None:
            parts.append(f"{fmt_time(time.median)} (IQR {time.iqr_pct:.0f}%, n={time.reps})")
        if peak_bytes is not None:
            parts.append(f"peak {fmt_bytes(peak_bytes)}")
        if saved_bytes is not None:
            parts.append(f"saved {fmt_bytes(saved_bytes)}")
        if gbps is not None:
            parts.append(f"{gbps:.1f} GB/s")
        for k, v in extra.items():
            if isinstance(v, float):
                parts.append(f"{k} {v:.3g}")
        progress("  " + ", ".join(parts))
        return rec

    def find(self, scenario: str, method: str, mode: str, **params: Any) -> Optional[Dict[str, Any]]:
        for r in self.records:
            if r["scenario"] == scenario and r["method"] == method and r["mode"] == mode and all(
                    r["params"].get(k) == v for k, v in params.items()):
                return r
        return None

    def target(self, id: str, description: str, measured: Optional[float], threshold: float, *,
               higher_is_better: bool = True, detail: str = "", tol: float = 0.0) -> Dict[str, Any]:
        """Record a ratio target; ``tol`` is a relative slack for measurement granularity (e.g. 0.02 for
        peak-memory equality, where page-level RSS noise of a few KB must not read as "more memory")."""
        if measured is None or measured != measured:
            met = None
        elif higher_is_better:
            met = measured >= threshold * (1 - tol)
        else:
            met = measured <= threshold * (1 + tol)
        t = {"id": id, "description": description, "measured": measured, "threshold": threshold, "tol": tol,
             "higher_is_better": higher_is_better, "met": met, "detail": detail}
        self.targets = [x for x in self.targets if x["id"] != id] + [t]
        cmp = ">=" if higher_is_better else "<="
        state = {True: "MET", False: "MISSED", None: "n/a"}[met]
        shown = "n/a" if measured is None else f"{measured:.2f}"
        progress(f"  target {id}: {shown} (want {cmp} {threshold}) {state}  {detail}")
        return t

    def save(self) -> List[str]:
        """Write results/<name>.json, results/<name>.md and results/<name>.png; returns the paths."""
        import report  # local import: matplotlib only needed here

        os.makedirs(self.results_dir, exist_ok=True)
        data = {"machine": self.info, "name": self.name, "device": self.device, "full": self.full,
                "quick": self.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)),
                "duration_s": round(time.time() - self.started, 1), "bandwidth": self._bandwidth,
                "scenarios": self.scenarios_run, "errors": self.errors, "targets": self.targets,
                "records": self.records}
        data["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        base = os.path.join(self.results_dir, self.name)
        with open(base + ".json", "w") as f:
            json.dump(data, f, indent=1)
        md = report.markdown(data)
        with open(base + ".md", "w") as f:
            f.write(md)
        paths = [base + ".json", base + ".md"]
        try:
            report.plot(data, base + ".png")
            paths.append(base + ".png")
        except Exception as e:  # noqa: BLE001
            progress(f"plot failed: {type(e).__name__}: {e}")
        return paths


# --------------------------------------------------------------------------------------------- formatting
def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    if b < 0:
        return "err"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(b) >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{int(b)} B"


# --------------------------------------------------------------------------------------------- CLI
def add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--all", action="store_true", help="everything: all sizes and methods (slow on CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few reps: a smoke test of the suite")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement (default 5)")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default=None, help="results file name (default: the machine name)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return p


def context_from_args(args: argparse.Namespace) -> Context:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    return Context(device=args.device, full=args.all, quick=args.quick, results_dir=args.out, reps=args.reps,
                   name=args.name)


def main_for(run: Callable[[Context], None], scenario: str = "") -> Context:
    """Standalone entry of one scenario script: parse the common flags, run, save under results/ with the
    scenario in the file name (``<machine>.<scenario>.json``) so the full-suite file is not overwritten."""
    args = add_args(argparse.ArgumentParser(description=f"safe_ops benchmark: {scenario}")).parse_args()
    ctx = context_from_args(args)
    if args.name is None:
        ctx.name = f"{ctx.name}.{scenario or 'scenario'}"
    ctx.scenarios_run.append(scenario)
    run(ctx)
    for p in ctx.save():
        progress(f"wrote {p}")
    return ctx


if __name__ == "__main__":  # pragma: no cover
    print(__doc__)
    sys.exit(0)
