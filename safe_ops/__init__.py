"""safe_ops: fused, autograd-safe accumulation ops for PyTorch.

Functional ops (``add``, ``sub``, ``addcmul``, ``lerp``, ``accumulate``) never write into their inputs and save
only what their backward reads. In-place-when-safe variants (``add_`` ...) write into their first argument when
that cannot invalidate the autograd graph and otherwise return a new tensor: rebind the result,
``total = safe_ops.add_(total, x)``.
"""
from . import _fake  # noqa: F401  (registers the fake kernels)
from ._inplace import (
    Decision,
    InplaceHazardError,
    accumulate_,
    add_,
    addcmul_,
    can_write_inplace,
    inplace_decision,
    lerp_,
    sub_,
)
from ._ops import accumulate, add, addcmul, lerp, sub
from . import guard  # the package, callable: safe_ops.guard(mode) is a Guard
from .guard import Guard

__all__ = [
    "add",
    "sub",
    "addcmul",
    "lerp",
    "accumulate",
    "add_",
    "sub_",
    "addcmul_",
    "lerp_",
    "accumulate_",
    "can_write_inplace",
    "inplace_decision",
    "Decision",
    "InplaceHazardError",
    "guard",
    "Guard",
]
