"""The one benchmark harness every ``benchmarks/bench_*.py`` script uses: a package split by job, each module
importing only ones listed above it (no cycle)::

    log        progress lines
    fmt        human-readable times and byte counts
    timing     Stats, time_fn, time_interleaved, sync, cold_compile
    bandwidth  gbps, stream_bandwidth, contention_probe                uses timing
    memory     saved_tensor_bytes, peak_memory (forkserver children)  uses log
    machine    machine_name, machine_info, cpu_model
    report     the markdown table and the plot of a results dict       uses fmt, log
    context    Context: one run's records and targets, save()          uses all of the above
    cli        add_args, context_from_args, main_for                   uses context, log

This file only re-exports their public names, so scripts write ``from harness import X``.

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
``results/<machine>.<name>.*``). Scripts import this package as ``harness`` (benchmarks/ is on sys.path when a
script in it runs); a ``make`` given to ``peak_memory`` must be a module-level function of such a script so the
child process can import it. ``mode`` is "fwd", "fwd+bwd", or another short label. Sizes: use ``ctx.big``
(16M elements, 64K with --quick) and keep the default run short (the whole default suite must stay < 5 min on
the 2-core CPU); put larger sweeps behind ``ctx.full``.
"""
from .bandwidth import contention_probe, gbps, stream_bandwidth
from .cli import add_args, context_from_args, main_for
from .context import RESULTS_DIR, Context
from .fmt import fmt_bytes, fmt_time
from .log import progress
from .machine import cpu_model, machine_info, machine_name
from .memory import peak_memory, saved_tensor_bytes
from .timing import Stats, cold_compile, sync, time_fn, time_interleaved

__all__ = [
    "RESULTS_DIR", "Context", "Stats", "add_args", "cold_compile", "contention_probe", "context_from_args",
    "cpu_model", "fmt_bytes", "fmt_time", "gbps", "machine_info", "machine_name", "main_for", "peak_memory",
    "progress", "saved_tensor_bytes", "stream_bandwidth", "sync", "time_fn", "time_interleaved",
]
