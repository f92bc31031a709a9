"""torch's type promotion over a whole operand list (torch.result_type takes only two operands), as the C++
op code computes it with at::native::ResultTypeState."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def accumulate_dtype(tensors: Sequence[Tensor], weights: Optional[Tensor]) -> torch.dtype:
    """Result dtype of Σ weights[i]·tensors[i] (also of addcmul's three operands, weights None): dimensioned
    tensors first; 0-dim tensors, and the weights as Σ w[i]·x[i] sees them, count only when their category
    is higher."""
    dim_result = None
    zero_result = None
    for t in tensors:
        if t.dim() > 0:
            dim_result = t.dtype if dim_result is None else torch.promote_types(dim_result, t.dtype)
        else:
            zero_result = t.dtype if zero_result is None else torch.promote_types(zero_result, t.dtype)
    if weights is not None:
        zero_result = weights.dtype if zero_result is None else torch.promote_types(zero_result, weights.dtype)
    return combine_categories(dim_result, zero_result)


def category(dtype: torch.dtype) -> int:
    if dtype == torch.bool:
        return 0
    if dtype.is_complex:
        return 3
    if dtype.is_floating_point:
        return 2
    return 1


def combine_categories(higher: Optional[torch.dtype], lower: Optional[torch.dtype]) -> torch.dtype:
    # at::native::result_type(ResultTypeState): a lower-priority result counts only if its category is higher.
    if higher is None:
        return lower
    if lower is None:
        return higher
    if category(higher) >= category(lower):
        return higher
    return torch.promote_types(higher, lower)
