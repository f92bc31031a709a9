"""Run the safe_ops benchmark suite: every ``benchmarks/bench_*.py`` scenario, in ORDER, into one results file.

    python benchmarks/run.py                  # default subset (CPU: about 4 minutes on 2 cores)
    python benchmarks/run.py --all            # everything: all sizes up to 64M, K=2/8/32, all methods
    python benchmarks/run.py --device cuda    # the same suite on the GPU
    python benchmarks/run.py --only seed,ksum # some scenarios (names: the file names without bench_)
    python benchmarks/run.py --quick          # tiny sizes: a smoke test of the suite itself

Writes benchmarks/results/<machine>.json, <machine>.md (the table, also printed at the end) and <machine>.png.
A scenario that fails is reported (in the output and the results) and the others still run.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import time
import traceback
from types import ModuleType
from typing import List, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The harness and scenarios sit beside this file; safe_ops is built in place in the repository root (also
# for the measurement subprocesses, which inherit PYTHONPATH).
TESTS = os.path.join(ROOT, "tests")  # the op table and the shared models, which the scenarios iterate
for path in (HERE, TESTS, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, TESTS, os.environ.get("PYTHONPATH")) if p)

import harness  # noqa: E402
from harness import progress  # noqa: E402


class Found(NamedTuple):
    """A scenario script in benchmarks/: ``short`` is what --only/--skip name, ``module`` what is imported."""

    short: str  # "seed"
    module: str  # "bench_seed"


class Scenario(NamedTuple):
    """An imported scenario, sorted by its ORDER (then name) for the run."""

    order: int
    short: str
    module: ModuleType


def discover() -> List[Found]:
    found = []
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        found.append(Found(name[len("bench_"):], name))
    return found


def main(argv=None) -> int:
    p = harness.add_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    p.add_argument("--only", default="", help="comma-separated scenario names (e.g. seed,ksum,roofline)")
    p.add_argument("--skip", default="", help="comma-separated scenario names to leave out")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--no-table", action="store_true", help="do not print the markdown table at the end")
    args = p.parse_args(argv)
    found = discover()
    if args.list:
        for f in found:
            print(f.short)
        return 0
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    unknown = (only | skip) - {f.short for f in found}
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; have {[f.short for f in found]}")
    ctx = harness.context_from_args(args)
    import torch

    progress(f"safe_ops benchmarks on {ctx.name} ({ctx.info['cpu']}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, load average {ctx.info.get('loadavg_at_start')})"
             f"{' --all' if ctx.full else ''}{' --quick' if ctx.quick else ''}")
    scenarios: List[Scenario] = []
    for short, name in found:
        if (only and short not in only) or short in skip:
            continue
        try:
            mod = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            progress(f"cannot import {name}: {type(e).__name__}: {e}")
            ctx.errors.append({"scenario": short, "error": f"import: {type(e).__name__}: {e}"})
            continue
        if not hasattr(mod, "run"):
            progress(f"{name} has no run(ctx); skipped")
            continue
        scenarios.append(Scenario(getattr(mod, "ORDER", 100), short, mod))
    scenarios.sort(key=lambda s: (s.order, s.short))
    _ = ctx.bandwidth  # measured once, first, so every scenario compares against the same run's figure
    for _, short, mod in scenarios:
        t0 = time.perf_counter()
        progress(f"=== {short} ===")
        try:
            mod.run(ctx)
            ctx.scenarios_run.append(short)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            ctx.errors.append({"scenario": short, "error": f"{type(e).__name__}: {e}"})
        progress(f"=== {short}: {time.perf_counter() - t0:.0f} s ===")
        # keep the saved file current, so an interrupted run leaves what it measured
        ctx.save()
    paths = ctx.save()
    if not args.no_table:
        with open(paths[1]) as f:
            print("\n" + f.read())
    for path in paths:
        progress(f"wrote {os.path.relpath(path)}")
    if ctx.errors:
        progress(f"{len(ctx.errors)} scenario(s) failed: {', '.join(e['scenario'] for e in ctx.errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
