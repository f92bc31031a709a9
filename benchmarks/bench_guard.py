"""Scenario 7: what safe_ops.guard() costs, and what copy mode copies.

1. Per-op overhead on tiny tensors (16 float32): plain torch; a pass-through ``TorchDispatchMode`` (the floor
   for any tool that watches ops from Python); ``allow_mutation_on_saved_tensors`` (torch's own copy-on-write
   tool, the same mechanism class); ``guard("raise")``; ``guard("copy")``. Ops: an op that saves nothing
   (``add``, no grad), an in-place op (``add_``), and ops that save one / two tensors for backward (``sigmoid``,
   ``mul`` with grad; the result is dropped each call, so the graph and its records are freed in the loop).
   Reported in µs per call (median over samples of a ``CALLS``-call loop) and as a ratio to plain torch.
2. Per training step (forward + backward + SGD step) of the small ResNet and transformer block the tests train
   (``tests/models.py``, here wider), with the same methods (allow_mutation runs backward inside its context,
   which it requires).
3. Bytes copied by copy mode against ``allow_mutation_on_saved_tensors`` on the same cases (hazard catalogue
   rows and no-hazard writes), with both gradients checked against the out-of-place program.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import safe_ops

from harness import Context, Stats, main_for, progress, time_interleaved

# The models are the tests' (tests/models.py): the steps timed here are the ones the guard tests check.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from models import SmallResNet, TransformerBlock  # noqa: E402

SCENARIO = "7 guard"
ORDER = 7
N = 16
CALLS = 500
GUARD = 'guard("raise")'


class PassThrough(TorchDispatchMode):
    """The cheapest possible dispatch mode: what any Python-level op watcher pays per op."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _allow_mutation():
    return torch.autograd.graph.allow_mutation_on_saved_tensors()


METHODS: Dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "torch": contextlib.nullcontext,
    "pass-through mode": PassThrough,
    "allow_mutation_on_saved_tensors": _allow_mutation,
    'guard("raise")': lambda: safe_ops.guard("raise"),
    'guard("copy")': lambda: safe_ops.guard("copy"),
}

# name -> (grad, make(a, b, t) -> call)
OPS: List[Tuple[str, bool, Callable]] = [
    ("add (saves nothing)", False, lambda a, b, t: (lambda: torch.add(a, b))),
    ("add_ (in-place write)", False, lambda a, b, t: (lambda: t.add_(b))),
    ("sigmoid (saves 1)", True, lambda a, b, t: (lambda: torch.sigmoid(a))),
    ("mul (saves 2)", True, lambda a, b, t: (lambda: torch.mul(a, b))),
]


def per_op(ctx: Context) -> None:
    samples = 5 if ctx.quick else 15
    calls = 100 if ctx.quick else CALLS
    for op, grad, make in OPS:
        loops = {}
        for method in METHODS:
            a, b = (torch.randn(N, device=ctx.device, requires_grad=grad) for _ in range(2))
            t = torch.zeros(N, device=ctx.device)
            call = make(a, b, t)

            def loop(call=call):
                for _ in range(calls):
                    call()

            loops[method] = loop
        stats = _interleave_in_contexts(loops, samples)
        base = stats["torch"].median
        floor = stats["pass-through mode"].median
        for method, st in stats.items():
            per = Stats.of([s / calls for s in st.samples])
            ctx.record(SCENARIO, method, f"per op: {op}", time=per, params={"n": N, "calls": calls},
                       vs_torch=st.median / base, vs_pass_through=st.median / floor)
        if op.startswith("add (saves"):
            guarded = stats[GUARD].median
            ctx.target("guard-overhead-op", "guard per op that writes and saves nothing vs a pass-through mode",
                       guarded / floor, 1.25, higher_is_better=False,
                       detail=f"{guarded / calls * 1e6:.2f} µs vs {floor / calls * 1e6:.2f} µs "
                              f"(plain torch {base / calls * 1e6:.2f} µs)")


def _interleave_in_contexts(loops: Dict[str, Callable], samples: int) -> Dict[str, Stats]:
    """Round-robin like harness.time_interleaved, each loop inside its own method's context (entered
    around the timed loop only, so the contexts never nest)."""
    names = list(loops)
    times: Dict[str, List[float]] = {k: [] for k in names}
    for r in range(samples + 1):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            cm = METHODS[k]()
            with cm:
                t0 = time.perf_counter()
                loops[k]()
                dt = time.perf_counter() - t0
            if r:  # round 0 warms up
                times[k].append(dt)
    return {k: Stats.of(v) for k, v in times.items()}


# ---- training steps ---------------------------------------------------------------------------------------


MODELS = {
    "ResNet (3 blocks, 8x3x16x16)": (functools.partial(SmallResNet, width=16), (8, 3, 16, 16)),
    "transformer block (8x32x64)": (functools.partial(TransformerBlock, d=64, heads=4), (8, 32, 64)),
}


def make_step(device: str, method: str, model: str):
    build, shape = MODELS[model]
    torch.manual_seed(0)
    net = build().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    data = torch.randn(*shape, device=device)
    cm = METHODS[method]

    def step():
        with cm():
            loss = net(data).pow(2).mean()
            if method == "allow_mutation_on_saved_tensors":  # it needs backward inside its context
                loss.backward()
        if method != "allow_mutation_on_saved_tensors":
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def training_steps(ctx: Context) -> None:
    for model in MODELS:
        steps = {m: make_step(ctx.device, m, model) for m in METHODS}
        for s in steps.values():
            s()
        reps = 3 if ctx.quick else 9
        stats = time_interleaved(steps, device=ctx.device, reps=reps, max_time_s=ctx.max_time_s)
        base = stats["torch"].median
        for method, st in stats.items():
            ctx.record(SCENARIO, method, f"train step: {model}", time=st, vs_torch=st.median / base)
        guarded = stats[GUARD].median
        ctx.target(f"guard-step-{model.split()[0].lower()}", f"{GUARD} training step vs plain: {model}",
                   guarded / base, 3.0, higher_is_better=False,
                   detail=f"{guarded * 1e3:.2f} ms vs {base * 1e3:.2f} ms")


# ---- bytes copied ------------------------------------------------------------------------------------------

S = 256  # the cases' tensors: S x S float32 (256 KiB)


def _x():
    return torch.rand(S, S, requires_grad=True)


def case_sigmoid_output(x):
    y = x.sigmoid()
    y.mul_(2)
    return y.sum()


def case_row_of_saved_input(x):
    a = x * 1
    y = a @ a.t()
    a[0] = 0.0
    return y.sum() + a.sum()


def case_inner_row_of_saved_input(x):  # the written view starts past the saved tensor's first element
    a = x * 1
    y = a @ a.t()
    a[1] = 0.0
    return y.sum() + a.sum()


def case_disjoint_half(x):
    a = x * 1
    y = a[:, : S // 2].sigmoid() * a[:, : S // 2]  # saves the left half
    a[:, S // 2:].mul_(2)  # writes the right half
    return y.sum() + a.sum()


def case_one_of_two_views(x):
    a = x * 1
    y1 = a[:, : S // 2] * a[:, : S // 2]
    y2 = a[:, S // 2:] * a[:, S // 2:]
    a[:, :1].zero_()  # touches the left view only
    return y1.sum() + y2.sum() + a.sum()


def case_saved_twice(x):
    a = x * 1
    y = (a * a).sum() + a.sin().sum()
    a.add_(1)
    return y + a.sum()


def case_data_write(x):
    y = x.exp()
    y.data.mul_(0.5)
    return y.sum()


def case_strided_neighbours(x):
    a = x * 1
    y = a[:, ::2] * a[:, ::2]  # even columns
    a[:, 1::2].zero_()  # odd columns
    return y.sum() + a.sum()


def case_no_hazard(x):
    y = x + 1
    y.mul_(2)
    buf = torch.zeros(S, S)
    buf.add_(x.detach())
    return (y * buf).sum()


CASES = [case_sigmoid_output, case_row_of_saved_input, case_inner_row_of_saved_input, case_disjoint_half,
         case_one_of_two_views, case_saved_twice, case_data_write, case_strided_neighbours, case_no_hazard]


def _reference_grad(case) -> torch.Tensor:
    """The out-of-place program: every saved tensor snapshotted at save time."""
    torch.manual_seed(1)
    x = _x()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
        loss = case(x)
    loss.backward()
    return x.grad


def bytes_copied(ctx: Context) -> None:
    ours_total = theirs_total = 0
    for case in CASES:
        expected = _reference_grad(case)
        torch.manual_seed(1)
        x = _x()
        with safe_ops.guard("copy") as g:
            loss = case(x)
        loss.backward()
        ours_ok = torch.allclose(x.grad, expected)
        torch.manual_seed(1)
        x = _x()
        with torch.autograd.graph.allow_mutation_on_saved_tensors() as am:
            loss = case(x)
            theirs = sum(t.numel() * t.element_size() for t in am.cloned.values())
            loss.backward()
        theirs_ok = torch.allclose(x.grad, expected)
        name = case.__name__[len("case_"):]
        ctx.record(SCENARIO, 'guard("copy")', f"bytes copied: {name}", params={"shape": [S, S]},
                   bytes_copied=g.stats.bytes, copies=g.stats.copies, grad_ok=ours_ok)
        ctx.record(SCENARIO, "allow_mutation_on_saved_tensors", f"bytes copied: {name}", params={"shape": [S, S]},
                   bytes_copied=theirs, grad_ok=theirs_ok)
        progress(f"  {name}: guard copy {g.stats.bytes} B ({g.stats.copies} copies, grad ok {ours_ok}); "
                 f"allow_mutation {theirs} B (grad ok {theirs_ok})")
        ours_total += g.stats.bytes
        theirs_total += theirs
    ctx.target("guard-bytes-copied", "copy mode: bytes copied over the cases vs allow_mutation_on_saved_tensors",
               ours_total / max(theirs_total, 1), 1.0, higher_is_better=False,
               detail=f"{ours_total} B vs {theirs_total} B")


def run(ctx: Context) -> None:
    progress(f"{SCENARIO}: per-op overhead ({N} float32, {CALLS} calls per sample) ...")
    per_op(ctx)
    progress(f"{SCENARIO}: training steps ...")
    training_steps(ctx)
    progress(f"{SCENARIO}: bytes copied, copy mode vs allow_mutation_on_saved_tensors ...")
    bytes_copied(ctx)


if __name__ == "__main__":
    main_for(run, "guard")
