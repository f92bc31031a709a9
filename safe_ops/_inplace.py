"""The in-place-when-safe rules shared by every generated ``safe_ops.<op>_`` (``_wrappers.py``).

The decision (``csrc/python/module.cpp``) reads reference counts of the borrowed tensor in C++, where they are
exact; it needs no global mode and no hooks. The rule table is written once, in README.md ("When does `add_`
write in place?"). On top of the decision: the result must have the target's shape and dtype, and in grad mode
the target must not be one of the other operands (the op may save that operand, which the write would destroy).
The plain case (the decision says IN_PLACE and every operand has the target's dtype and shape) is decided in C++
by the in-place entry itself (csrc/python/fast_entry.h), in the same call as the write.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Sequence

import torch
from torch import Tensor

from . import _C
from ._promotion import accumulate_dtype, category
from ._twin import cast_error
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
    if decision == Decision.COPY_TRANSFORMED:  # vmap/grad/jvp wrappers: the functional result, always
        return False
    if decision == Decision.RAISE_SAVED_LEAF_NO_GRAD:
        raise _hazard(op, target, "a pending backward saved it (or a view of it), so writing it would corrupt "
                      "that backward's gradients.")
    if decision == Decision.RAISE_HELD_NO_GRAD:
        raise InplaceHazardError(
            f"safe_ops.{op}: cannot update this {tuple(target.shape)} {target.dtype} tensor under torch.no_grad(): "
            f"something else holds it (a pending backward saved it, or a view of it is alive), so writing it could "
            f"corrupt that backward's gradients, and a copy would leave the state you are updating stale. Run the "
            f"pending backward (or free its graph) first, or write it with torch's own in-place op.")
    if decision == Decision.COPY_INTERNAL_OVERLAP:  # torch's own error: a write would be ill-defined
        raise RuntimeError(
            f"safe_ops.{op}: unsupported operation: more than one element of the written-to tensor refers to a "
            f"single memory location. Please clone() the tensor before performing the operation.")
    if decision == Decision.RAISE_INTERNAL_OVERLAP:
        raise _hazard(op, target, "its elements overlap in memory (expanded), so an elementwise write is "
                      "ill-defined.")
    if not fits:
        if not torch.is_grad_enabled() and (target.is_leaf or not target.requires_grad):
            # A state update (a Parameter, a buffer): a copy would leave it stale.
            raise InplaceHazardError(
                f"safe_ops.{op}: cannot update this {tuple(target.shape)} {target.dtype} tensor under "
                f"torch.no_grad(): the result's shape or dtype differs from it (promotion or broadcasting), so it "
                f"cannot be written in place, and a copy would leave the state you are updating stale. Convert the "
                f"operands to {target.dtype} (and its shape) first, or write it with torch's own in-place op.")
        return False
    # safe_ops.guard's records hold an alias of each saved tensor, so the counts see them: its hooks alone
    # need not force a copy.
    if decision != _IN_PLACE and not (decision == Decision.COPY_HOOKS_ACTIVE and hooks_are_only_guards()):
        return False
    if torch.is_grad_enabled() and any(o is target for o in others):
        return False
    return True


def compiled_writable(target: Tensor, fits: bool) -> bool:
    """Under torch.compile, where counts cannot be read: write state (a target that is not part of the graph:
    buffers, EMA and optimizer updates under no_grad, plain accumulators), which functionalization writes back
    into graph inputs; a graph tensor in grad mode gets the functional result, which the compiler fuses anyway,
    so a value a pending backward saved is never written (values and gradients are those of the eager path)."""
    return fits and not (torch.is_grad_enabled() and target.requires_grad)


def _broadcasts_to_target(target: Tensor, shaped: Sequence[Tensor]) -> bool:
    shape = target.shape
    if all(o.shape == shape for o in shaped):
        return True
    return tuple(torch.broadcast_shapes(shape, *(o.shape for o in shaped))) == tuple(shape)


def fits(target: Tensor, shaped: Sequence[Tensor], dtype: torch.dtype) -> bool:
    """Can a result of `dtype` at the broadcast shape of target and `shaped` be written into target? As torch's
    in-place ops: the shape must be target's; another dtype is cast into target's when torch.can_cast allows it
    (a float64 operand into a float32 target), else torch's error."""
    if dtype != target.dtype and category(dtype) > category(target.dtype):  # torch.can_cast, traceable
        raise cast_error(dtype, target.dtype)
    return _broadcasts_to_target(target, shaped)


def fits_same_dtype(target: Tensor, shaped: Sequence[Tensor], coefficients: Sequence[Tensor]) -> bool:
    """As fits, for ops that do not promote (lerp): an operand of another dtype is torch's error."""
    dtype = target.dtype
    # torch takes a 0-dim weight of another dtype (lerp_(end, torch.tensor(0.3, dtype=torch.float64))), not end.
    for i, o in enumerate((*shaped, *coefficients)):
        if o.dtype != dtype and not (i > 0 and o.dim() == 0):
            raise RuntimeError(f"expected dtype {dtype} for every operand of the in-place op, but got dtype {o.dtype}")
    return _broadcasts_to_target(target, shaped)


def like_target(result: Tensor, target: Tensor) -> Tensor:
    """A new result in place of a write: in target's dtype, as torch's in-place op would have left it."""
    return result if result.dtype == target.dtype else result.to(target.dtype)


def promoted_dtype(tensors: Sequence[Tensor], coefficients: Sequence[Tensor], numbers: Sequence) -> torch.dtype:
    """torch's promotion over the operands: tensors, 0-dim-like coefficient tensors, Python numbers last."""
    dtype = accumulate_dtype(tensors, coefficients[0] if coefficients else None)
    for n in numbers:  # a number counts only where its category is higher than the tensors'
        dtype = torch.result_type(torch.empty(0, dtype=dtype), n)
    return dtype
