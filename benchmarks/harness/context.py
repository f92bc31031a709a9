"""Context: one benchmark run's settings, the records and targets it collects, and saving them (JSON, then the
table and plot through report)."""
from __future__ import annotations

import gc
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from . import report
from .bandwidth import gbps, stream_bandwidth
from .fmt import fmt_bytes, fmt_time
from .log import progress
from .machine import machine_info
from .memory import peak_memory
from .timing import Stats, sync, time_fn, time_interleaved

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


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
        return [base + ".json"] + report.write(data, base)

