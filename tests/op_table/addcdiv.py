"""safe_ops.addcdiv: input + value * tensor1 / tensor2 (Adam's update)."""
import torch

import safe_ops

from .core import BitwiseCase, DTensorCase, ForeachInfo, FuzzInfo, OpInfo
from .samples import (
    dtensor_inplace,
    ternary_errors,
    ternary_opinfo_errors,
    ternary_samples,
    ternary_transform_checks,
    value_op_half_grads,
)


def _samples(dtype, device, requires_grad=False):
    """The ternary cases with the divisor kept away from zero (|tensor2| >= 0.5), in the same layouts."""
    previous = None  # ternary_samples yields each operand tuple twice in a row (two values)
    for sample in ternary_samples(dtype, device):
        t2 = sample.args[2]
        if t2 is not previous:
            previous = t2
            t2.copy_(torch.where(t2 < 0, t2 - 0.5, t2 + 0.5))  # copy_ keeps the layout
        for t in sample.args:
            t.requires_grad_(requires_grad)
        yield sample


def _saved(sample, requiring):
    saved = set()
    if requiring & {"tensor1", "tensor2"}:
        saved.add("tensor2")
    if "tensor2" in requiring:
        saved.add("tensor1")
    return frozenset(saved)


def _cuda_reference(s32, a, b, value, v):
    return (s32 + a / b).double() if value == 1 else s32.double() + v * (a / b).double()


def _backward_vmap_cases(B):
    g, x, v = torch.randn(B, 3, 4), torch.randn(B, 3, 4), torch.randn(4)
    d = x.abs() + 0.5
    return [("grad_and_divisor", torch.ops.safe_ops.addcdiv_backward.default, (g, v, d, -2.0, [True, True]),
             (0, None, 0, None, None))]


OP = OpInfo(
    "addcdiv", torch.addcdiv, _samples, lambda s, d: True, lambda s: ["input", "tensor1", "tensor2"], _saved,
    update=lambda t, o: ((t, o, o.abs() + 0.5), {"value": 0.5}),
    error_inputs=ternary_errors("addcdiv", torch.addcdiv),
    bench=lambda a, b, c: ((a, b, c.abs() + 0.5), {"value": 0.5}), torch_twin=torch.addcdiv, streams=4,
    backward_streams=5,
    opinfo_error_inputs=lambda t, err: ternary_opinfo_errors(t, err) + [
        err(t(3, dtype=torch.int64), t(3, dtype=torch.int64), t(3, dtype=torch.int64))],
    bitwise=(BitwiseCase("addcdiv", lambda m, a, b, c, w: m.addcdiv(a, b, c, value=-0.3), half=True),),
    grad_bitwise=(("addcdiv", lambda m, a, b, c, k: m.addcdiv(a, b, c, value=k), 3),),
    fuzz=FuzzInfo(("tensor1", "tensor2"), scalar_kw="value"),
    out_args=lambda a, b, c: ((a, b, c), {"value": -2}),
    twin_cases=lambda dtype, t, number, pos: [((t(3, 4), t(3, 4), pos), {"value": number})] if dtype.is_complex
    else [],
    complex_grad_cases=lambda C: [
        ("divisor_off_zero", (torch.randn(5, dtype=C), torch.randn(5, dtype=C), torch.randn(5, dtype=C) + 3), {})],
    backward_vmap_cases=_backward_vmap_cases,
    dtensor=(DTensorCase("addcdiv", lambda a, b, c, w: safe_ops.addcdiv(a, b, c, value=3),
                         lambda a, b, c, w: torch.addcdiv(a, b, c, value=3), 3),),
    dtensor_inplace=dtensor_inplace("addcdiv", {"value": 2}, lambda b: (b, b + 1)),
    cuda_value_reference=_cuda_reference,
    cuda_half_grads=(("value", lambda f, s, x, y: f.addcdiv(s, x, y, value=0.3), (1, 2)),),
    host_half_grads=value_op_half_grads("addcdiv"),
    checks=ternary_transform_checks("addcdiv"),
)

FOREACH = ForeachInfo(
    "foreach_addcdiv",
    lambda ts, xs, w: torch._foreach_addcdiv_(ts, xs[0], xs[1], value=w),
    positive_lists=(1,),
    skips=(("cuda_on_host.foreach_chunks", "the multi-chunk walk runs once (21M simulated elements), on the "
            "foreach op every member of which is fused"),),
)
