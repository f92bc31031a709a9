"""Scenario 3: product accumulation (``acc += v·a·b``) and the EMA update (``ema = d·ema + (1−d)·x``),
16M float32, with saved-for-backward bytes.

Each method's ``ref`` is the safe_ops op of the same kind: in-place methods (they write into an existing
``acc``/``ema`` buffer) against ``safe_ops.addcmul_``/``lerp_``, out-of-place ones (they allocate the result)
against ``safe_ops.addcmul``/``lerp``. fwd+bwd: a, b, x require grad (acc/ema is a plain buffer that does not).
``saved for bwd`` is measured with grad on (the in-place safe_ops variants take their copy branch while the
saved_tensors_hooks are active, so theirs is the functional op's figure).
"""
from __future__ import annotations

import torch

import safe_ops

from harness import Context, main_for, progress, saved_tensor_bytes

SCENARIO = "3 addcmul / EMA"
ORDER = 3

V = 0.5
D = 0.99

# name -> (family, writes into existing buffer?, fn(acc_or_ema, a_or_x, b))
METHODS = {
    "acc + v*a*b": ("addcmul", False, lambda acc, a, b: acc + V * a * b),
    "torch.addcmul(acc, a, b, value=v)": ("addcmul", False, lambda acc, a, b: torch.addcmul(acc, a, b, value=V)),
    "safe_ops.addcmul": ("addcmul", False, lambda acc, a, b: safe_ops.addcmul(acc, a, b, value=V)),
    "acc.addcmul_(a, b, value=v)": ("addcmul", True, lambda acc, a, b: acc.addcmul_(a, b, value=V)),
    "safe_ops.addcmul_": ("addcmul", True, lambda acc, a, b: safe_ops.addcmul_(acc, a, b, value=V)),
    "ema*d + x*(1-d)": ("ema", False, lambda ema, x, _: ema * D + x * (1 - D)),
    "torch.lerp(ema, x, 1-d)": ("ema", False, lambda ema, x, _: torch.lerp(ema, x, 1 - D)),
    "safe_ops.lerp": ("ema", False, lambda ema, x, _: safe_ops.lerp(ema, x, 1 - D)),
    "ema.mul_(d).add_(x, alpha=1-d)": ("ema", True, lambda ema, x, _: ema.mul_(D).add_(x, alpha=1 - D)),
    "ema.lerp_(x, 1-d)": ("ema", True, lambda ema, x, _: ema.lerp_(x, 1 - D)),
    "safe_ops.lerp_": ("ema", True, lambda ema, x, _: safe_ops.lerp_(ema, x, 1 - D)),
}
REF = {("addcmul", False): "safe_ops.addcmul", ("addcmul", True): "safe_ops.addcmul_",
       ("ema", False): "safe_ops.lerp", ("ema", True): "safe_ops.lerp_"}
DEFAULT = ("acc + v*a*b", "torch.addcmul(acc, a, b, value=v)", "safe_ops.addcmul", "acc.addcmul_(a, b, value=v)",
           "safe_ops.addcmul_", "ema.mul_(d).add_(x, alpha=1-d)", "torch.lerp(ema, x, 1-d)", "safe_ops.lerp",
           "safe_ops.lerp_")


def make(device, method, mode, n):
    family, inplace, fn = METHODS[method]
    bwd = mode == "fwd+bwd"
    buf = torch.randn(n, device=device)
    a = torch.randn(n, device=device, requires_grad=bwd)
    b = torch.randn(n, device=device, requires_grad=bwd) if family == "addcmul" else None
    g = torch.ones(n, device=device) if bwd else None
    leaves = [t for t in (a, b) if t is not None]

    def run():
        if bwd:
            buf.detach_()
        out = fn(buf, a, b)
        if bwd:
            out.backward(g)
            grads = [t.grad for t in leaves]
            for t in leaves:
                t.grad = None
            return out, grads
        return out

    return run


def saved_bytes(device, method, n, b_grad=True) -> int:
    """Saved for backward with a (and b, if b_grad) requiring grad."""
    family, inplace, fn = METHODS[method]
    buf = torch.randn(n, device=device)
    a = torch.randn(n, device=device, requires_grad=True)
    b = torch.randn(n, device=device, requires_grad=b_grad) if family == "addcmul" else None
    return saved_tensor_bytes(lambda: fn(buf, a, b))


def check(device) -> None:
    n = 1000
    for method, (family, _inplace, fn) in METHODS.items():
        torch.manual_seed(0)
        acc = torch.randn(n, device=device, dtype=torch.float64)
        a = torch.randn(n, device=device, dtype=torch.float64, requires_grad=True)
        b = torch.randn(n, device=device, dtype=torch.float64, requires_grad=True)
        if family == "addcmul":
            ref = acc + V * a.detach() * b.detach()
        else:
            ref = acc * D + a.detach() * (1 - D)
        out = fn(acc.clone(), a, b if family == "addcmul" else None)
        torch.testing.assert_close(out, ref, msg=lambda m: f"{method}: {m}")
        out.sum().backward()
        want_a = V * b.detach() if family == "addcmul" else torch.full_like(ref, 1 - D)
        torch.testing.assert_close(a.grad, want_a, msg=lambda m: f"{method}: {m}")


def run(ctx: Context) -> None:
    n = ctx.big
    methods = list(METHODS) if ctx.full else list(DEFAULT)
    progress(f"{SCENARIO}: n={n} float32")
    check(ctx.device)
    for mode in ("fwd", "fwd+bwd"):
        extra = {}
        nbytes = {}
        for method in methods:
            family, inplace, _ = METHODS[method]
            extra[method] = {"ref": REF[(family, inplace)]}
            nbytes[method] = (4 if family == "addcmul" else 3) * n * 4
        recs = ctx.bench_group(SCENARIO, make, methods, mode, {"n": n}, extra=extra,
                               nbytes=nbytes if mode == "fwd" else None)
        if mode == "fwd+bwd":
            for method, rec in recs.items():
                rec["saved_bytes"] = saved_bytes(ctx.device, method, n)
                if METHODS[method][0] == "addcmul":
                    rec["saved_bytes_a_only"] = saved_bytes(ctx.device, method, n, b_grad=False)
                progress(f"  saved for backward by {method}: {rec['saved_bytes'] / 2**20:.1f} MiB"
                         + (f" ({rec['saved_bytes_a_only'] / 2**20:.1f} MiB when only a needs grad)"
                            if "saved_bytes_a_only" in rec else ""))


if __name__ == "__main__":
    main_for(run, "ema")
