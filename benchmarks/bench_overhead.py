"""Scenario 6: per-call overhead on tiny tensors (16 float32 elements), through the public Python API.

Each sample times a Python loop of ``CALLS`` calls on fresh state and divides (the in-place variants include
their safety check; with grad they extend one autograd chain per sample, as torch's in-place ops do); the
median over samples is reported in µs per call, with the ratio to ``torch.add(a, b)`` measured the same way
in the same run (the target: ≤ 1.5×) and to torch's own equivalent op. Mode "grad": every operand
requires grad (the in-place target is a plain tensor that then joins the graph); mode "no grad": none does.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch

import safe_ops

from harness import Context, Stats, main_for, progress
from op_table import OP_TABLE

SCENARIO = "6 per-call overhead (16 elements)"
ORDER = 6
N = 16
CALLS = 1000

# (name, torch equivalent name, make(a, b, c, t) -> zero-arg call), for every op of the op table
# (tests/op_table/) on its benchmark call, beside torch's own op.
Case = Tuple[str, str, Callable]


def _make(fn, bench):
    def make(a, b, c, t):
        args, kwargs = bench(a, b, c, t)
        return lambda: fn(*args, **kwargs)

    return make


def _functional_cases() -> List[Case]:
    cases: List[Case] = [("torch.add", "torch.add", _make(torch.add, lambda a, b, c, t: ((a, b), {})))]
    for info in OP_TABLE:
        twin = f"torch.{info.name}" if info.torch_twin is not None else "torch.add"
        if info.torch_twin is not None and twin != "torch.add":
            cases.append((twin, twin, _make(info.torch_twin, lambda a, b, c, t, info=info: info.bench(a, b, c))))
        cases.append((f"safe_ops.{info.name}", twin, _make(info.op, lambda a, b, c, t, info=info: info.bench(a, b, c))))
    return cases


def _method(name):
    return lambda t, *args, **kwargs: getattr(t, name)(*args, **kwargs)


def _inplace_cases() -> List[Case]:
    cases: List[Case] = []
    for info in OP_TABLE:
        bench = lambda a, b, c, t, info=info: info.bench_inplace(t, a, b, c)  # noqa: E731
        method = info.torch_inplace()
        twin = f"Tensor.{method}" if method else "Tensor.add_"
        if method:
            cases.append((twin, twin, _make(_method(method), bench)))
        cases.append((f"safe_ops.{info.name}_", twin, _make(info.inplace, bench)))
    cases.append(("safe_ops.can_write_inplace", "-", lambda a, b, c, t: (lambda: safe_ops.can_write_inplace(t))))
    return cases


FUNCTIONAL: List[Case] = _functional_cases()
INPLACE: List[Case] = _inplace_cases()


def per_call(make: Callable, device: str, grad: bool, samples: int) -> Stats:
    """Median over ``samples`` of (time of CALLS calls) / CALLS, each sample on fresh operands."""
    times: List[float] = []
    for s in range(samples + 2):
        a, b, c = (torch.randn(N, device=device, requires_grad=grad) for _ in range(3))
        t = torch.zeros(N, device=device)
        call = make(a, b, c, t)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            call()
        if device != "cpu":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / CALLS
        del call, t
        if s >= 2:  # two warm-up samples
            times.append(dt)
    return Stats.of(times)


def run(ctx: Context) -> None:
    samples = 5 if ctx.quick else 21
    progress(f"{SCENARIO}: {CALLS} calls per sample, {samples} samples, {torch.get_num_threads()} threads")
    # the in-place variants must take the in-place branch on these operands
    t = torch.zeros(N, device=ctx.device)
    b = torch.randn(N, device=ctx.device, requires_grad=True)
    assert safe_ops.add_(t, b) is t and safe_ops.add_(t, b) is t
    modes = [("grad", True), ("no grad", False)]
    for mode, grad in modes:
        res: Dict[str, Stats] = {}
        for name, ref, make in FUNCTIONAL + INPLACE:
            st = per_call(make, ctx.device, grad, samples)
            res[name] = st
            ctx.record(SCENARIO, name, mode, time=st, params={"n": N}, torch_equivalent=ref,
                       ref="torch.add")
        base = res["torch.add"].median
        for name, ref, _ in FUNCTIONAL + INPLACE:
            rec = ctx.find(SCENARIO, name, mode)
            rec["vs_torch_add"] = res[name].median / base
            if ref in res:
                rec["vs_torch_equivalent"] = res[name].median / res[ref].median
        if grad:
            worst_f = max((n for n, _, _ in FUNCTIONAL if n.startswith("safe_ops")), key=lambda n: res[n].median)
            worst_i = max((n for n, _, _ in INPLACE if n.startswith("safe_ops") and n != "safe_ops.can_write_inplace"),
                          key=lambda n: res[n].median)
            ctx.target("overhead-functional", "tiny call with autograd, functional ops: slowest vs torch.add",
                       res[worst_f].median / base, 1.5, higher_is_better=False,
                       detail=f"slowest: {worst_f} {res[worst_f].median * 1e6:.2f} µs vs torch.add "
                              f"{base * 1e6:.2f} µs")
            ctx.target("overhead-inplace", "tiny call with autograd, in-place-when-safe variants: slowest vs torch.add",
                       res[worst_i].median / base, 1.5, higher_is_better=False,
                       detail=f"slowest: {worst_i} {res[worst_i].median * 1e6:.2f} µs")
            for name in ("safe_ops.add", "safe_ops.add_"):
                ctx.target(f"overhead-{name}", f"tiny call with autograd: {name} vs torch.add",
                           res[name].median / base, 1.5, higher_is_better=False,
                           detail=f"{res[name].median * 1e6:.2f} µs vs {base * 1e6:.2f} µs")


if __name__ == "__main__":
    main_for(run, "overhead")
