"""safe_ops.sub: input - alpha * other."""
import torch

import safe_ops

from .core import BitwiseCase, DTensorCase
from .samples import binary_opinfo_errors, binary_row, dtensor_inplace

OP = binary_row(
    "sub", torch.sub,
    update=lambda t, o: ((t, o), {}),
    bitwise=(BitwiseCase("sub", lambda m, a, b, c, w: m.sub(a, b, alpha=0.7)),
             BitwiseCase("sub_unit_alpha", lambda m, a, b, c, w: m.sub(a, b), half=True)),
    bitwise_inplace=lambda b, c: ((b,), {"alpha": 0.7}),
    opinfo_error_inputs=lambda t, err: binary_opinfo_errors(t, err, torch.sub) + [
        err(t(3, dtype=torch.bool), t(3, dtype=torch.bool))],
    out_args=lambda a, b, c: ((a, b), {"alpha": 2}),
    twin_cases=lambda dtype, t, number, pos: [] if dtype == torch.bool else [((t(3, 4), t(3, 1)), {"alpha": number})],
    complex_grad_cases=lambda C: [("complex_number", (torch.randn(5, dtype=C), 1 + 2j), {})],
    dtensor=(DTensorCase("sub", lambda a, b, c, w: safe_ops.sub(a, b, alpha=0.5),
                         lambda a, b, c, w: torch.sub(a, b, alpha=0.5), 2),),
    dtensor_inplace=dtensor_inplace("sub", {}),
)
