"""Scenario 1: the seed loop ``for i in range(K): total.add_(x * i)`` (K=8, 16M float32 by default).

Methods: eager in-place, eager out-of-place (``total = total + x*i``), ``torch.compile`` of the in-place loop
(compile time reported beside), ``safe_ops.add`` (``total = safe_ops.add(total, x, alpha=i)``),
``safe_ops.add_`` (``total = safe_ops.add_(total, x, alpha=i)``) and the loop as one call,
``safe_ops.accumulate_(total, [x] * K, range(K))`` (x is read once, with its weights summed). Forward, and
forward + ``total.backward(g)``.

Two ways to get ``total``: "alloc" (the seed code: ``total = torch.zeros_like(x)`` inside the step) and
"existing" (a preallocated buffer zeroed in place at the start of the step); the default run does "alloc",
``--all`` adds "existing".
"""
from __future__ import annotations

import torch

import safe_ops

from harness import Context, cold_compile, main_for, progress

SCENARIO = "1 seed loop"
ORDER = 1

EAGER_INPLACE = "eager total.add_(x*i)"
EAGER_OUT = "eager total = total + x*i"
COMPILED = "torch.compile(loop)"
SAFE_ADD = "safe_ops.add"
SAFE_ADD_ = "safe_ops.add_"
SAFE_ACCUMULATE_ = "safe_ops.accumulate_([x]*K)"
METHODS = (EAGER_INPLACE, EAGER_OUT, COMPILED, SAFE_ADD, SAFE_ADD_, SAFE_ACCUMULATE_)


def _loop(update):
    """The seed loop with `total = update(total, x, i)` as its body."""
    def loop(x, k: int, total=None):
        if total is None:
            total = torch.zeros_like(x)
        for i in range(k):
            total = update(total, x, i)
        return total

    return loop


loop_inplace = _loop(lambda total, x, i: total.add_(x * i))
loop_out = _loop(lambda total, x, i: total + x * i)
loop_safe_add = _loop(lambda total, x, i: safe_ops.add(total, x, alpha=i))
loop_safe_add_ = _loop(lambda total, x, i: safe_ops.add_(total, x, alpha=i))


def loop_safe_accumulate_(x, k: int, total=None):
    if total is None:
        total = torch.zeros_like(x)
    return safe_ops.accumulate_(total, [x] * k, list(range(k)))


_COMPILED = {}


def step_fn(method: str):
    if method == COMPILED:
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(loop_inplace)
        return _COMPILED["fn"]
    return {EAGER_INPLACE: loop_inplace, EAGER_OUT: loop_out, SAFE_ADD: loop_safe_add,
            SAFE_ADD_: loop_safe_add_, SAFE_ACCUMULATE_: loop_safe_accumulate_}[method]


def make(device, method, mode, n, k, total="alloc"):
    """Inputs: x (requires grad for fwd+bwd), the upstream gradient, and for total="existing" the buffer."""
    bwd = mode == "fwd+bwd"
    x = torch.randn(n, device=device, requires_grad=bwd)
    g = torch.ones(n, device=device) if bwd else None
    buf = torch.zeros(n, device=device) if total == "existing" else None
    fn = step_fn(method)

    def run():
        t = None
        if buf is not None:
            with torch.no_grad():
                buf.detach_()  # drop last step's history: a plain accumulator again
                buf.zero_()
            t = buf
        out = fn(x, k, t)
        if bwd:
            out.backward(g)
            grad, x.grad = x.grad, None  # returned: alive until the caller drops it, then freed
            return out, grad
        return out

    return run


def check(device) -> None:
    """Every method gives the same total and x.grad (small size)."""
    ref_x = torch.randn(1000, device=device, dtype=torch.float64)
    ref = sum(ref_x * i for i in range(8))
    for method in METHODS:
        if method == COMPILED:
            continue  # compiled at the benchmark size instead (checked there against eager)
        x = ref_x.clone().requires_grad_()
        out = step_fn(method)(x, 8)
        out.backward(torch.ones_like(out))
        torch.testing.assert_close(out, ref, msg=lambda m: f"{method}: {m}")
        torch.testing.assert_close(x.grad, torch.full_like(x, 28.0), msg=lambda m: f"{method}: {m}")


def run(ctx: Context) -> None:
    n, k = ctx.big, 8
    progress(f"{SCENARIO}: K={k}, n={n} float32")
    check(ctx.device)
    cold_compile()  # the compile time beside torch.compile's figure is a real compile, not a disk-cache hit
    totals = ["alloc", "existing"] if ctx.full else ["alloc"]
    for total in totals:
        for mode in ("fwd", "fwd+bwd"):
            torch._dynamo.reset()
            _COMPILED.clear()
            params = {"n": n, "k": k, "total": total}
            recs = ctx.bench_group(SCENARIO, make, list(METHODS), mode, params, ref=SAFE_ADD_)
            rec = recs[COMPILED]
            rec["compile_s"] = max(0.0, rec["first_call_s"] - rec["time"]["median"])
    for total in totals:
        for mode in ("fwd", "fwd+bwd"):
            p = {"total": total}
            sfx = "" if total == "alloc" else " (existing total)"
            r1 = ctx.ratio(SCENARIO, EAGER_INPLACE, SAFE_ADD_, mode, **p)
            r2 = ctx.ratio(SCENARIO, EAGER_OUT, SAFE_ADD_, mode, **p)
            rc = ctx.ratio(SCENARIO, COMPILED, SAFE_ADD_, mode, **p)
            rm = ctx.ratio(SCENARIO, SAFE_ADD_, EAGER_INPLACE, mode, key="peak", **p)
            ctx.target(f"seed-vs-inplace-{mode}-{total}", f"seed loop {mode}{sfx}: safe_ops.add_ vs total.add_(x*i)",
                       r1, 5.0)
            ctx.target(f"seed-vs-outofplace-{mode}-{total}",
                       f"seed loop {mode}{sfx}: safe_ops.add_ vs total = total + x*i", r2, 8.0)
            ctx.target(f"seed-peak-{mode}-{total}",
                       f"seed loop {mode}{sfx}: peak of safe_ops.add_ / peak of total.add_(x*i)", rm, 1.0,
                       higher_is_better=False, tol=0.02)
            ctx.target(f"seed-vs-compile-{mode}-{total}",
                       f"seed loop {mode}{sfx}: safe_ops.add_ vs torch.compile steady state", rc, 1.0)
            ra = ctx.ratio(SCENARIO, COMPILED, SAFE_ACCUMULATE_, mode, **p)
            ctx.target(f"seed-accumulate-vs-compile-{mode}-{total}",
                       f"seed loop {mode}{sfx}: one safe_ops.accumulate_ call vs torch.compile steady state", ra,
                       1.0)


if __name__ == "__main__":
    main_for(run, "seed")
