"""Scenario 8: whole-model updates in one call, on real parameter lists (tests/param_shapes.py: torchvision's
mobilenet_v3_small and resnet50, a GPT-2-small-shaped list), float32, under no_grad.

- EMA ``ema = lerp(ema, p, 1 - d)``: ``safe_ops.foreach_lerp_`` against ``torch._foreach_lerp_``, a loop of
  ``Tensor.lerp_``, a loop of ``safe_ops.lerp_``, and one ``lerp_`` over a single flat buffer holding the same
  values (the bound: the same bytes with no per-tensor cost).
- Mixed precision, an fp32 EMA of a bf16 model: ``safe_ops.foreach_lerp_`` (one pass) against timm's fallback,
  ``_foreach_mul_`` + ``_foreach_add_`` (two passes; ``_foreach_lerp_`` needs one dtype).
- Gradient-accumulation style ``acc += g``: ``safe_ops.foreach_add_`` against ``torch._foreach_add_``.
Each method's ``ref`` is the safe_ops foreach call of its family. ``--quick``: mobilenet_v3_small only.
"""
from __future__ import annotations

import math

import torch

import safe_ops

from harness import Context, main_for, progress
from param_shapes import MODELS

SCENARIO = "8 foreach (whole-model updates)"
ORDER = 8
W = 1 - 0.999  # the EMA weight of decay 0.999

SAFE_LERP = "safe_ops.foreach_lerp_"
SAFE_MIXED = "safe_ops.foreach_lerp_ (fp32 EMA, bf16 model)"
SAFE_ADD = "safe_ops.foreach_add_"
BOUND = "flat lerp_ (bound)"


def _two_pass(ema, model):  # timm's ModelEmaV3 fallback when lerp_ cannot take the dtypes
    torch._foreach_mul_(ema, 1 - W)
    torch._foreach_add_(ema, model, alpha=W)


def _loop(fn):
    def run(a, b):
        for x, y in zip(a, b):
            fn(x, y)
    return run


# name -> (family, model dtype, fn(ema list, model list, flat ema, flat model))
METHODS = {
    SAFE_LERP: ("lerp", torch.float32, lambda e, m, fe, fm: safe_ops.foreach_lerp_(e, m, W)),
    "torch._foreach_lerp_": ("lerp", torch.float32, lambda e, m, fe, fm: torch._foreach_lerp_(e, m, W)),
    "loop Tensor.lerp_": ("lerp", torch.float32, lambda e, m, fe, fm: _loop(lambda x, y: x.lerp_(y, W))(e, m)),
    "loop safe_ops.lerp_": ("lerp", torch.float32,
                            lambda e, m, fe, fm: _loop(lambda x, y: safe_ops.lerp_(x, y, W))(e, m)),
    BOUND: ("lerp", torch.float32, lambda e, m, fe, fm: fe.lerp_(fm, W)),
    SAFE_MIXED: ("mixed", torch.bfloat16, lambda e, m, fe, fm: safe_ops.foreach_lerp_(e, m, W)),
    "_foreach_mul_ + _foreach_add_ (timm fallback)": ("mixed", torch.bfloat16, lambda e, m, fe, fm: _two_pass(e, m)),
    SAFE_ADD: ("add", torch.float32, lambda e, m, fe, fm: safe_ops.foreach_add_(e, m)),
    "torch._foreach_add_": ("add", torch.float32, lambda e, m, fe, fm: torch._foreach_add_(e, m)),
}
REF = {"lerp": SAFE_LERP, "mixed": SAFE_MIXED, "add": SAFE_ADD}
BYTES_PER_VALUE = {"lerp": 12, "mixed": 10, "add": 12}  # read ema, read the model, write ema


def make(device, method, mode, model):
    family, dtype, fn = METHODS[method]
    shapes = MODELS[model]()
    gen = torch.Generator().manual_seed(0)
    ema = [torch.randn(s, generator=gen).to(device) for s in shapes]
    params = [torch.randn(s, generator=gen).to(device, dtype) for s in shapes]
    flat_ema = flat_params = None
    if method == BOUND:
        flat_ema, flat_params = torch.cat([t.flatten() for t in ema]), torch.cat([t.flatten() for t in params])
        ema = params = None

    def run():
        with torch.no_grad():
            return fn(ema, params, flat_ema, flat_params)

    return run


def check(device) -> None:
    """Every method computes the same EMA step (the bound on flat copies) on a few real shapes."""
    shapes = MODELS["mobilenet_v3_small"]()[:12]
    gen = torch.Generator().manual_seed(0)
    ema0 = [torch.randn(s, generator=gen).to(device) for s in shapes]
    p32 = [torch.randn(s, generator=gen).to(device) for s in shapes]
    for method, (family, dtype, fn) in METHODS.items():
        ema = [t.clone() for t in ema0]
        params = [p.to(dtype) for p in p32]
        fe, fm = torch.cat([t.flatten() for t in ema]), torch.cat([t.flatten() for t in params])
        with torch.no_grad():
            fn(ema, params, fe, fm)
        got = list(torch.split(fe, [t.numel() for t in ema])) if method == BOUND else [t.flatten() for t in ema]
        for g, e, p in zip(got, ema0, params):
            want = (e + p.float()) if family == "add" else (e + W * (p.float() - e))
            torch.testing.assert_close(g, want.flatten(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{method}: {m}")


def run(ctx: Context) -> None:
    models = ["mobilenet_v3_small"] if ctx.quick else list(MODELS)
    check(ctx.device)
    for model in models:
        shapes = MODELS[model]()
        n = sum(math.prod(s) for s in shapes)
        progress(f"{SCENARIO}: {model}, {len(shapes)} tensors, {n / 1e6:.1f}M values")
        extra = {m: {"ref": REF[METHODS[m][0]]} for m in METHODS}
        nbytes = {m: BYTES_PER_VALUE[METHODS[m][0]] * n for m in METHODS}
        ctx.bench_group(SCENARIO, make, list(METHODS), "fwd", {"model": model}, memory=False, extra=extra,
                        nbytes=nbytes)
        p = {"model": model}
        if model != "gpt2_small":
            bound = ctx.ratio(SCENARIO, BOUND, SAFE_LERP, "fwd", **p)
            ctx.target(f"foreach-lerp-vs-bound-{model}", f"{model}: foreach_lerp_ speed / flat-buffer bound's",
                       bound, 0.85)
            ctx.target(f"foreach-lerp-vs-torch-{model}", f"{model}: foreach_lerp_ vs torch._foreach_lerp_",
                       ctx.ratio(SCENARIO, "torch._foreach_lerp_", SAFE_LERP, "fwd", **p),
                       1.5 if model == "mobilenet_v3_small" else 1.0)
        ctx.target(f"foreach-mixed-vs-two-pass-{model}", f"{model}: fp32 EMA of bf16, one pass vs timm's two",
                   ctx.ratio(SCENARIO, "_foreach_mul_ + _foreach_add_ (timm fallback)", SAFE_MIXED, "fwd", **p), 1.5)
        ctx.target(f"foreach-add-vs-torch-{model}", f"{model}: foreach_add_ vs torch._foreach_add_",
                   ctx.ratio(SCENARIO, "torch._foreach_add_", SAFE_ADD, "fwd", **p), 1.0)


if __name__ == "__main__":
    main_for(run, "foreach")
