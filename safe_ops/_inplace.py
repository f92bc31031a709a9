"""The in-place-when-safe rules shared by every generated ``safe_ops.<op>_`` (``_wrappers.py``).

The decision (``csrc/python_module.cpp``) reads reference counts of the borrowed tensor in C++, where they are
exact; it needs no global mode and no hooks. The rule table is written once, in README.md ("When does `add_`
write in place?"). On top of the decision: the result must have the target's shape and dtype, and in grad mode
the target must not be one of the other operands (the op may save that operand, which the write would destroy).
"""
from __future__ import annotations

from enum import IntEnum
from typing import Sequence

import torch
from torch import Tensor

from . import _C
from ._promotion import accumulate_dtype
from .errors import InplaceHazardError
from .guard._hooks import hooks_are_only_guards

# Why a tensor can or cannot be written in place: the names and values of the C++ enum.
Decision = IntEnum("Decision", [(name, value) for value, name in enumerate(_C.DECISIONS)])
Decision.__doc__ = "Why a tensor can or cannot be written in place (README: When does `add_` write in place?)."
Decision.__module__ = "safe_ops"

_decide = _C._inplace_decision
_IN_PLACE = Decision.IN_PLACE.value


def inplace_decision(t: Tensor) -> Decision:
    """Why ``t`` would or would not be written in place right now."""
    return Decision(_decide(t))


def can_write_inplace(t: Tensor) -> bool:
    """Whether writing into ``t``'s memory now cannot invalidate anything autograd saved."""
    return _decide(t) == _IN_PLACE


def _hazard(op: str, t: Tensor, why: str) -> InplaceHazardError:
    return InplaceHazardError(
        f"safe_ops.{op}: cannot update this {tuple(t.shape)} {t.dtype} leaf that requires grad (a Parameter?) "
        f"under torch.no_grad(): {why} A copy would never reach the module that owns it. Run the pending "
        f"backward (or free its graph) first, or update a clone explicitly."
    )


def writable(op: str, target: Tensor, others: Sequence[Tensor], fits: bool) -> bool:
    """True: write into `target`. False: return a new tensor. Raises where neither is safe."""
    decision = _decide(target)
    if decision == Decision.RAISE_SAVED_LEAF_NO_GRAD:
        raise _hazard(op, target, "a pending backward saved it, or another tensor aliases its memory, so writing "
                      "it would corrupt that backward's gradients.")
    if not fits:
        if target.requires_grad and target.is_leaf and not torch.is_grad_enabled():
            raise _hazard(op, target, "the result's shape or dtype differs from the leaf's, so it cannot be "
                          "written in place.")
        return False
    # safe_ops.guard's records hold an alias of each saved tensor, so the counts see them: its hooks alone
    # need not force a copy.
    if decision != _IN_PLACE and not (decision == Decision.COPY_HOOKS_ACTIVE and hooks_are_only_guards()):
        return False
    if torch.is_grad_enabled() and any(o is target for o in others):
        return False
    return True


def plain_case(target: Tensor, others: Sequence[Tensor], number_operand: bool) -> bool:
    """The common case, checked cheaply before the full rules: nothing saved or aliases `target`, and every
    operand has its dtype and shape and is not `target` itself (so the result fits, and the write cannot
    change an operand the op saves). A number operand keeps a floating target's dtype."""
    if _decide(target) != _IN_PLACE:
        return False
    if number_operand and not target.is_floating_point():
        return False
    dtype, shape = target.dtype, target.shape
    for o in others:
        if o is target or o.dtype != dtype or o.shape != shape:
            return False
    return True


def _broadcasts_to_target(target: Tensor, shaped: Sequence[Tensor]) -> bool:
    shape = target.shape
    if all(o.shape == shape for o in shaped):
        return True
    return tuple(torch.broadcast_shapes(shape, *(o.shape for o in shaped))) == tuple(shape)


def fits(target: Tensor, shaped: Sequence[Tensor], dtype: torch.dtype) -> bool:
    """Does a result of `dtype` at the broadcast shape of target and `shaped` have target's shape and dtype?"""
    return dtype == target.dtype and _broadcasts_to_target(target, shaped)


def fits_same_dtype(target: Tensor, shaped: Sequence[Tensor], coefficients: Sequence[Tensor]) -> bool:
    """As fits, for ops that do not promote (lerp): every operand must have target's dtype."""
    dtype = target.dtype
    return all(o.dtype == dtype for o in (*shaped, *coefficients)) and _broadcasts_to_target(target, shaped)


def promoted_dtype(tensors: Sequence[Tensor], coefficients: Sequence[Tensor], numbers: Sequence) -> torch.dtype:
    """torch's promotion over the operands: tensors, 0-dim-like coefficient tensors, Python numbers last."""
    dtype = accumulate_dtype(tensors, coefficients[0] if coefficients else None)
    for n in numbers:  # a number counts only where its category is higher than the tensors'
        dtype = torch.result_type(torch.empty(0, dtype=dtype), n)
    return dtype
