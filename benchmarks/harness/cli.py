"""Command line: the flags every benchmark entry point shares, and ``main_for``, a scenario script run alone."""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from .context import RESULTS_DIR, Context
from .log import progress


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
