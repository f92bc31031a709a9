"""Scenario 2: the K-way sum of a list of tensors (K=8 × 16M float32 by default; --all adds K=2 and K=32).

Into an existing buffer (a running total ``out``, e.g. a gradient-accumulation buffer; ``out += Σ xs``):
  - ``for x in xs: out.add_(x)``                       3 passes per x: 3K memory passes
  - ``out = safe_ops.accumulate_(out, xs)``            one pass: K + 2 memory passes
Allocating the result (``total = Σ xs``, a fresh tensor):
  - ``total = torch.zeros_like(xs[0]); for x in xs: total.add_(x)``
  - ``torch.stack(xs).sum(0)``                         materialises a K× copy first
  - ``sum(xs)``                                        Python's sum: K temporaries
  - ``torch.compile`` of the zeros + add_ loop         (compile time reported beside)
  - ``safe_ops.accumulate(xs)``                        K + 1 memory passes
Forward, and forward + ``result.backward(g)`` (xs require grad).
"""
from __future__ import annotations

import torch

import safe_ops

from harness import Context, cold_compile, main_for, progress

SCENARIO = "2 K-way sum"
ORDER = 2

LOOP_EXISTING = "for x in xs: out.add_(x)"
SAFE_ACC_ = "safe_ops.accumulate_(out, xs)"
LOOP_ALLOC = "zeros_like + add_ loop"
STACK = "torch.stack(xs).sum(0)"
PYSUM = "sum(xs)"
COMPILED = "torch.compile(zeros + add_ loop)"
SAFE_ACC = "safe_ops.accumulate(xs)"
EXISTING = (LOOP_EXISTING, SAFE_ACC_)
ALLOCATING = (LOOP_ALLOC, STACK, PYSUM, COMPILED, SAFE_ACC)
METHODS = EXISTING + ALLOCATING


def loop_existing(xs, out):
    for x in xs:
        out.add_(x)
    return out


def safe_acc_(xs, out):
    return safe_ops.accumulate_(out, xs)


def loop_alloc(xs, out=None):
    total = torch.zeros_like(xs[0])
    for x in xs:
        total.add_(x)
    return total


def stack_sum(xs, out=None):
    return torch.stack(xs).sum(0)


def py_sum(xs, out=None):
    return sum(xs)


def safe_acc(xs, out=None):
    return safe_ops.accumulate(xs)


_COMPILED = {}


def step_fn(method: str):
    if method == COMPILED:
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(loop_alloc)
        return _COMPILED["fn"]
    return {LOOP_EXISTING: loop_existing, SAFE_ACC_: safe_acc_, LOOP_ALLOC: loop_alloc, STACK: stack_sum,
            PYSUM: py_sum, SAFE_ACC: safe_acc}[method]


def make(device, method, mode, n, k):
    bwd = mode == "fwd+bwd"
    xs = [torch.randn(n, device=device, requires_grad=bwd) for _ in range(k)]
    g = torch.ones(n, device=device) if bwd else None
    buf = torch.zeros(n, device=device) if method in EXISTING else None
    fn = step_fn(method)

    def run():
        if bwd and buf is not None:
            buf.detach_()  # last step's history gone: a plain accumulator again
        out = fn(xs, buf)
        if bwd:
            out.backward(g)
            grads = [x.grad for x in xs]  # returned: alive until the caller drops them, then freed
            for x in xs:
                x.grad = None
            return out, grads
        return out

    return run


def check(device) -> None:
    xs = [torch.randn(1000, device=device, dtype=torch.float64) for _ in range(5)]
    ref = torch.stack(xs).sum(0)
    for method in METHODS:
        if method == COMPILED:
            continue
        ys = [x.clone().requires_grad_() for x in xs]
        buf = torch.zeros_like(ref) if method in EXISTING else None
        out = step_fn(method)(ys, buf)
        if method == SAFE_ACC_:
            assert out is buf, "accumulate_ did not write into the existing buffer"
        out.backward(torch.ones_like(out))
        torch.testing.assert_close(out, ref, msg=lambda m: f"{method}: {m}")
        for y in ys:
            torch.testing.assert_close(y.grad, torch.ones_like(y), msg=lambda m: f"{method}: {m}")


def run(ctx: Context) -> None:
    n = ctx.big
    ks = [2, 8, 32] if ctx.full else [8]
    progress(f"{SCENARIO}: K in {ks}, n={n} float32")
    check(ctx.device)
    cold_compile()  # the compile time beside torch.compile's figure is a real compile, not a disk-cache hit
    esize = 4
    for k in ks:
        for mode in ("fwd", "fwd+bwd"):
            torch._dynamo.reset()
            _COMPILED.clear()
            params = {"n": n, "k": k}
            nbytes = None
            if mode == "fwd":
                nbytes = {m: {LOOP_EXISTING: 3 * k, SAFE_ACC_: k + 2}.get(m, k + 1) * n * esize for m in METHODS}
            refs = {m: {"ref": SAFE_ACC_ if m in EXISTING else SAFE_ACC} for m in METHODS}
            recs = ctx.bench_group(SCENARIO, make, list(METHODS), mode, params, nbytes=nbytes, extra=refs)
            rec = recs[COMPILED]
            rec["compile_s"] = max(0.0, rec["first_call_s"] - rec["time"]["median"])
    for k in ks:
        if k != 8 and not ctx.full:
            continue
        for mode in ("fwd", "fwd+bwd"):
            p = {"k": k}
            ctx.target(f"k{k}-acc_-vs-loop-{mode}", f"K={k} {mode}: accumulate_ vs add_ loop into existing total",
                       ctx.ratio(SCENARIO, LOOP_EXISTING, SAFE_ACC_, mode, **p), 2.2)
            ctx.target(f"k{k}-acc-vs-allocloop-{mode}", f"K={k} {mode}: accumulate vs zeros_like + add_ loop",
                       ctx.ratio(SCENARIO, LOOP_ALLOC, SAFE_ACC, mode, **p), 1.2)
            ctx.target(f"k{k}-acc-vs-stack-{mode}", f"K={k} {mode}: accumulate vs stack().sum(0), time",
                       ctx.ratio(SCENARIO, STACK, SAFE_ACC, mode, **p), 5.0)
            if mode == "fwd":  # with backward, the K gradients (allocated by either) dominate the peak
                ctx.target(f"k{k}-acc-vs-stack-peak-{mode}",
                           f"K={k} {mode}: accumulate vs stack().sum(0), peak memory",
                           ctx.ratio(SCENARIO, STACK, SAFE_ACC, mode, key="peak", **p), 8.0)
            ctx.target(f"k{k}-acc-vs-compile-{mode}", f"K={k} {mode}: accumulate vs torch.compile steady state",
                       ctx.ratio(SCENARIO, COMPILED, SAFE_ACC, mode, **p), 1.0)


if __name__ == "__main__":
    main_for(run, "ksum")
