"""``out=`` with torch's semantics for every functional op: the result computed by the op, then written into
``out`` as torch's out= variants write (an empty ``out`` resized silently, a non-empty one of another shape
resized with torch's warning, a result dtype cast into ``out``'s where torch.can_cast allows, else torch's
error). It costs one copy more than torch's out= kernels; what it buys is one rule for every op, accumulate
included, which has no torch twin."""
from __future__ import annotations

import warnings
from typing import Callable, Iterable

import torch
from torch import Tensor

from ._promotion import category
from ._twin import cast_error


def _requires_grad(values: Iterable) -> bool:
    for v in values:
        if isinstance(v, Tensor) and v.requires_grad:
            return True
        if isinstance(v, (list, tuple)) and any(isinstance(t, Tensor) and t.requires_grad for t in v):
            return True
    return False


def write_out(name: str, out: Tensor, inputs: tuple, compute: Callable[[], Tensor]) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    if torch.is_grad_enabled() and (out.requires_grad or _requires_grad(inputs)):
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support automatic differentiation, "
                           "but one of the arguments requires grad.")
    result = compute()
    if result.dtype != out.dtype and category(result.dtype) > category(out.dtype):
        raise cast_error(result.dtype, out.dtype)
    if result.device != out.device:
        raise RuntimeError(f"Expected out tensor to have device {result.device}, but got {out.device} instead")
    if out.shape != result.shape:
        if out.numel() != 0:
            warnings.warn(
                f"An output with one or more elements was resized since it had shape {list(out.shape)}, which does "
                f"not match the required output shape {list(result.shape)}. This behavior is deprecated, and in a "
                "future PyTorch release outputs will not be resized unless they have zero elements. You can "
                "explicitly reuse an out tensor t by resizing it, inplace, to zero elements with t.resize_(0).",
                UserWarning, stacklevel=3)
        out.resize_(result.shape)
    return out.copy_(result)
