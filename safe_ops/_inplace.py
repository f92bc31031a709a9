"""The action and message of each in-place decision, for every generated ``safe_ops.<op>_`` (``_wrappers.py``) and
``safe_ops.foreach_<op>_`` (``_foreach.py``).

The decision itself has one owner, ``decide_write()`` in ``csrc/core/inplace_decision.cpp``: it reads the target's
reference counts in C++, where they are exact, then the operands by their declared roles (the result's shape and
dtype, an operand that is the target, an operand whose gradient reads the target) and the mode. The rule table is
written once, in README.md ("When does `add_` write in place?"). The C fast entries (``csrc/python/fast_entry.h``)
write where it says IN_PLACE, in the same call; everything else asks it through ``_C._decide_write`` and acts here
(``writable``: write, new tensor, or raise with safe_ops' message). torch.compile cannot trace into C:
``compiled_decision`` is the traceable image of the C++ function's compiled mode (tests/test_inplace_decision.py
checks that the two agree).
"""
from __future__ import annotations

from enum import IntEnum
from typing import List, Sequence

import torch
from torch import Tensor

from . import _C
from ._promotion import accumulate_dtype, category
from ._twin import cast_error
from .errors import InplaceHazardError

# Why a tensor can or cannot be written in place: the names and values of the C++ enum.
Decision = IntEnum("Decision", [(name, value) for value, name in enumerate(_C.DECISIONS)])
Decision.__doc__ = "Why a tensor can or cannot be written in place (README: When does `add_` write in place?)."
Decision.__module__ = "safe_ops"

_decide = _C._inplace_decision
_IN_PLACE = Decision.IN_PLACE.value
# Plain ints: what compiled_decision returns is a constant of the traced graph.
_COPY_GRAD_READS_TARGET = Decision.COPY_GRAD_READS_TARGET.value
_COPY_RESULT_DOES_NOT_FIT = Decision.COPY_RESULT_DOES_NOT_FIT.value
_COPY_COMPILED_GRAPH_TENSOR = Decision.COPY_COMPILED_GRAPH_TENSOR.value


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


def _result_does_not_fit(op: str, t: Tensor) -> InplaceHazardError:
    return InplaceHazardError(
        f"safe_ops.{op}: cannot update this {tuple(t.shape)} {t.dtype} tensor under torch.no_grad(): the result's "
        f"shape or dtype differs from it (promotion or broadcasting), so it cannot be written in place, and a copy "
        f"would leave the state you are updating stale. Convert the operands to {t.dtype} (and its shape) first, or "
        f"write it with torch's own in-place op.")


def writable(op: str, target: Tensor, decision: int) -> bool:
    """The action of a decision (``_C._decide_write``): True write into `target`, False return a new tensor; raises
    where neither is safe."""
    if decision == _IN_PLACE:
        return True
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
    if decision == Decision.RAISE_RESULT_DOES_NOT_FIT_NO_GRAD:
        raise _result_does_not_fit(op, target)
    return False  # every COPY_* decision


def compiled_decision(target: Tensor, operands: tuple, roles: str) -> int:
    """The traceable image of ``decide_write()``'s compiled mode (``csrc/core/inplace_decision.cpp``), which dynamo
    cannot trace into: the same decision over the same roles (tests/test_inplace_decision.py checks they agree).
    Counts cannot be read there: state (a target that is not part of the graph: buffers, EMA and optimizer updates
    under no_grad, plain accumulators) is written, which functionalization writes back into graph inputs; a graph
    tensor in grad mode gets the functional result, which the compiler fuses anyway, so a value a pending backward
    saved is never written (values and gradients are those of the eager path)."""
    grad = torch.is_grad_enabled()
    shaped: List[Tensor] = []
    coefficients: List[Tensor] = []
    numbers: list = []
    for role, x in zip(roles[1:], operands):
        if role == "o" or role == "g":
            if role == "g" and grad and x.requires_grad:
                return _COPY_GRAD_READS_TARGET  # torch's dtype and shape errors are then the functional op's
            shaped.append(x)
        elif role == "l":
            shaped += list(x)
        elif role == "c":
            coefficients.append(x)
        elif role == "n":
            numbers.append(x)
    if roles[0] == "f":
        fit = fits_same_dtype(target, shaped, coefficients)
    else:
        fit = fits(target, shaped, promoted_dtype([target, *shaped], coefficients, numbers))
    if not fit:
        return _COPY_RESULT_DOES_NOT_FIT
    if grad and target.requires_grad:
        return _COPY_COMPILED_GRAPH_TENSOR
    return _IN_PLACE


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
