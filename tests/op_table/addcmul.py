"""safe_ops.addcmul: input + value * tensor1 * tensor2."""
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp, vmap

import safe_ops

from .core import BitwiseCase, Check, DTensorCase, ForeachInfo, FuzzInfo, OpInfo
from .samples import (
    dtensor_inplace,
    ternary_errors,
    ternary_opinfo_errors,
    ternary_samples,
    ternary_transform_checks,
    value_op_half_grads,
)


def _saved(sample, requiring):
    saved = set()
    if "tensor1" in requiring:
        saved.add("tensor2")
    if "tensor2" in requiring:
        saved.add("tensor1")
    return frozenset(saved)


def _cuda_reference(s32, a, b, value, v):
    return s32.double() + a.double() * b.double() if value == 1 else s32.double() + v * (a * b).double()


def _tangent_dtype_follows_promotion(dtypes):
    # Only the lower-precision operand is dual: the tangent still has the result's dtype, as in torch.
    a, b = torch.randn(4, dtype=dtypes[0]), torch.randn(4, dtype=dtypes[1])
    ta = torch.randn_like(a)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(safe_ops.addcmul(fwAD.make_dual(a, ta), b, b))
        want = fwAD.unpack_dual(torch.addcmul(fwAD.make_dual(a, ta), b, b))
        assert got.tangent.dtype == want.tangent.dtype == got.primal.dtype
        torch.testing.assert_close(got.tangent, want.tangent)


PROMOTIONS = [(torch.float32, torch.float64), (torch.float16, torch.float32), (torch.float64, torch.bfloat16)]


def _vmap_of_jvp():
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    tx, ty = torch.randn_like(x), torch.randn_like(y)
    got = vmap(lambda a, t: jvp(lambda u, v: safe_ops.addcmul(u, u, v), (a, y), (t, ty)))(x, tx)
    want = vmap(lambda a, t: jvp(lambda u, v: torch.addcmul(u, u, v), (a, y), (t, ty)))(x, tx)
    torch.testing.assert_close(got, want)


def _backward_vmap_cases(B):
    g, x, v = torch.randn(B, 3, 4), torch.randn(B, 3, 4), torch.randn(4)
    op = torch.ops.safe_ops.addcmul_backward.default
    return [("both", op, (g, x, v, 0.5, [True, True]), (0, 0, None, None, None)),
            ("one", op, (g[0], None, x, 0.5, [True, False]), (None, None, 0, None, None), (0, None))]


OP = OpInfo(
    "addcmul", torch.addcmul, ternary_samples,
    # Bit for bit with torch: the same fused multiply-adds as torch's kernels for this CPU (csrc/cpu/isa_loops.h).
    lambda s, d: True, lambda s: ["input", "tensor1", "tensor2"], _saved,
    update=lambda t, o: ((t, o, o), {"value": 0.5}), error_inputs=ternary_errors("addcmul", torch.addcmul),
    bench=lambda a, b, c: ((a, b, c), {"value": 0.5}), torch_twin=torch.addcmul, streams=4, backward_streams=5,
    opinfo_error_inputs=ternary_opinfo_errors,
    bitwise=(BitwiseCase("addcmul", lambda m, a, b, c, w: m.addcmul(a, b, c, value=-0.3), half=True),),
    bitwise_inplace=lambda b, c: ((b, c), {"value": -0.3}),
    grad_bitwise=(("addcmul", lambda m, a, b, c, k: m.addcmul(a, b, c, value=k), 3),),
    fuzz=FuzzInfo(("tensor1", "tensor2"), scalar_kw="value"),
    out_args=lambda a, b, c: ((a, b, c), {"value": 0.5}),
    twin_cases=lambda dtype, t, number, pos: [] if dtype == torch.bool else [
        ((t(3, 4), t(3, 4), t(4)), {"value": number})],
    complex_grad_cases=lambda C: [
        ("complex_value", (torch.randn(5, dtype=C), torch.randn(5, dtype=C), torch.randn(5, dtype=C)),
         {"value": 0.5j})],
    backward_vmap_cases=_backward_vmap_cases,
    dtensor=(DTensorCase("addcmul", lambda a, b, c, w: safe_ops.addcmul(a, b, c, value=3),
                         lambda a, b, c, w: torch.addcmul(a, b, c, value=3), 3),),
    dtensor_inplace=dtensor_inplace("addcmul", {"value": 2}, lambda b: (b, b)),
    cuda_value_reference=_cuda_reference,
    cuda_half_grads=(("value", lambda f, s, x, y: f.addcmul(s, x, y, value=0.3), (1, 2)),),
    host_half_grads=value_op_half_grads("addcmul"),
    checks=(*ternary_transform_checks("addcmul"),
            *(Check("transforms", f"tangent_dtype_follows_promotion-{d}",
                    lambda d=d: _tangent_dtype_follows_promotion(d)) for d in PROMOTIONS),
            Check("transforms", "vmap_of_jvp", _vmap_of_jvp)),
)

FOREACH = ForeachInfo(
    "foreach_addcmul",
    lambda ts, xs, w: torch._foreach_addcmul_(ts, xs[0], xs[1], value=w),
    bad_inputs=(("second list", lambda a: safe_ops.foreach_addcmul_(a, a, a[:1]), RuntimeError,
                 lambda a: torch._foreach_addcmul_(a, a, a[:1])),),
    skips=(("cuda_on_host.foreach_chunks", "the multi-chunk walk runs once (21M simulated elements), on the "
            "foreach op every member of which is fused"),),
)
