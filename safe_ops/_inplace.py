"""In-place-when-safe variants: write into the first argument's memory when that cannot invalidate anything
autograd saved, otherwise leave it untouched and return a new tensor. Callers rebind:
``total = safe_ops.add_(total, x, alpha=i)``.

The decision (csrc/python_module.cpp) reads reference counts of the borrowed tensor in C++, where they are
exact; it needs no global mode and no hooks. The rules, most specific first:

- inference tensor outside inference mode -> copy (torch forbids the write)
- no_grad and a leaf that requires grad (a Parameter) -> in place, unless a pending graph saved it or something
  aliases it: then InplaceHazardError (a copy would never reach the module that owns the Parameter)
- grad mode and a leaf that requires grad -> copy (the write is the leaf error)
- a view, or a tensor whose elements overlap (expand) -> copy
- another holder of the tensor (an autograd node saved it as an input) -> copy
- another tensor shares its memory (a node saved it as an output, a view, ``.data``) -> copy
- grad mode and saved_tensors_hooks active -> copy (a hook may hold the tensor where counts can't see it),
  unless the only hooks are safe_ops.guard's, whose records the counts above do see
- otherwise -> in place, recording autograd history as Tensor.add_ does
The result must also have the input's shape and dtype, and the input must not be one of the other operands.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import _C
from ._native import ops
from ._promotion import accumulate_dtype
from .errors import InplaceHazardError
from ._ops import Number, _weights_list, accumulate, add, addcmul, call_op, keyword_last, lerp, sub


class Decision(IntEnum):
    """Why a tensor can or cannot be written in place (mirrors csrc/python_module.cpp)."""

    IN_PLACE = 0
    COPY_LEAF_REQUIRES_GRAD = 1
    COPY_VIEW = 2
    COPY_INTERNAL_OVERLAP = 3
    COPY_HELD_ELSEWHERE = 4
    COPY_SHARED_STORAGE = 5
    COPY_INFERENCE = 6
    COPY_HOOKS_ACTIVE = 7
    RAISE_SAVED_LEAF_NO_GRAD = 8


_decide = _C._inplace_decision


def inplace_decision(t: Tensor) -> Decision:
    """Why ``t`` would or would not be written in place right now (see the module docstring)."""
    return Decision(_decide(t))


def can_write_inplace(t: Tensor) -> bool:
    """Whether writing into ``t``'s memory now cannot invalidate anything autograd saved."""
    return _decide(t) == 0


def _only_guard_hooks() -> bool:
    # safe_ops.guard's records hold an alias of each saved tensor, so the counts see them: its hooks alone
    # need not force a copy. (Imported here: guard imports this module.)
    from .guard import hooks_are_only_guards

    return hooks_are_only_guards()


def _leaf_in_no_grad(t: Tensor) -> bool:
    return t.requires_grad and t.is_leaf and not torch.is_grad_enabled()


def _hazard(op: str, t: Tensor, why: str) -> InplaceHazardError:
    return InplaceHazardError(
        f"safe_ops.{op}: cannot update this {tuple(t.shape)} {t.dtype} leaf that requires grad (a Parameter?) "
        f"under torch.no_grad(): {why} A copy would never reach the module that owns it. Run the pending "
        f"backward (or free its graph) first, or update a clone explicitly."
    )


def _writable(op: str, input: Tensor, others: Sequence[Tensor], fits: bool) -> bool:
    """True: write into `input`. False: return a new tensor. Raises where neither is safe."""
    decision = _decide(input)
    if decision == Decision.RAISE_SAVED_LEAF_NO_GRAD:
        raise _hazard(op, input, "a pending backward saved it, or another tensor aliases its memory, so writing "
                      "it would corrupt that backward's gradients.")
    if not fits:
        if _leaf_in_no_grad(input):
            raise _hazard(op, input, "the result's shape or dtype differs from the leaf's, so it cannot be "
                          "written in place.")
        return False
    if decision != Decision.IN_PLACE and not (decision == Decision.COPY_HOOKS_ACTIVE and _only_guard_hooks()):
        return False
    if torch.is_grad_enabled() and any(o is input for o in others):
        return False  # the op may save that operand, which the write would destroy
    return True


def _fits(input: Tensor, shape, dtype: torch.dtype) -> bool:
    return dtype == input.dtype and tuple(shape) == tuple(input.shape)


def _fits_operands(input: Tensor, others: Sequence[Tensor], dtype: Optional[torch.dtype] = None) -> bool:
    """Does the op's result (dtype: its result dtype, default input's) have input's shape and dtype?"""
    if dtype is not None and dtype != input.dtype:
        return False
    shape = input.shape
    if all(o.shape == shape for o in others):
        return True
    return tuple(torch.broadcast_shapes(shape, *(o.shape for o in others))) == tuple(shape)


def _plain_case(input: Tensor, others: Sequence[Tensor]) -> bool:
    """The common case, checked cheaply before the full rules: nothing saved or aliases `input`, and every
    operand has its dtype and shape and is not `input` itself (so the result fits, and the write cannot
    change an operand the op saves)."""
    if _decide(input) != 0:
        return False
    dtype, shape = input.dtype, input.shape
    for o in others:
        if o is input or o.dtype != dtype or o.shape != shape:
            return False
    return True


def _number_keeps_dtype(input: Tensor, other) -> bool:
    # A Python number never changes a floating tensor's dtype (torch's promotion keeps the tensor's category).
    return input.is_floating_point() and isinstance(other, (int, float))


def _tensor_fits(input: Tensor, other: Tensor) -> bool:
    """Does input (op) other have input's shape and dtype? (the common case is checked first, cheaply)"""
    if other.dtype == input.dtype and other.shape == input.shape:
        return True
    return _fits(input, torch.broadcast_shapes(input.shape, other.shape), torch.result_type(input, other))


_add_inplace_tensor = keyword_last(ops.add_inplace.Tensor, "alpha")
_sub_inplace_tensor = keyword_last(ops.sub_inplace.Tensor, "alpha")
_addcmul_inplace = keyword_last(ops.addcmul_inplace.default, "value")


def add_(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input + alpha * other``, written into ``input`` when safe (then returns ``input``), else a new tensor.

    Never raises the version-counter or leaf error. Under ``torch.no_grad()`` a leaf that requires grad is
    written in place, or, if a pending backward saved it, InplaceHazardError is raised. Saved for backward:
    nothing.
    """
    if isinstance(other, Tensor):
        if _plain_case(input, (other,)) and _C.add_inplace_tensor(input, other, alpha) is not NotImplemented:
            return input
        if _writable("add_", input, (other,), _tensor_fits(input, other)):
            call_op(_C.add_inplace_tensor, _add_inplace_tensor, input, other, alpha)
            return input
        return add(input, other, alpha=alpha)
    if _number_keeps_dtype(input, other) and _decide(input) == 0:
        if _C.add_inplace_scalar(input, other, alpha) is not NotImplemented:
            return input
    if _writable("add_", input, (), torch.result_type(input, other) == input.dtype):
        call_op(_C.add_inplace_scalar, ops.add_inplace.Scalar, input, other, alpha)
        return input
    return add(input, other, alpha=alpha)


def sub_(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input - alpha * other``, in place when safe; see :func:`add_`."""
    if isinstance(other, Tensor):
        if _plain_case(input, (other,)) and _C.sub_inplace_tensor(input, other, alpha) is not NotImplemented:
            return input
        if _writable("sub_", input, (other,), _tensor_fits(input, other)):
            call_op(_C.sub_inplace_tensor, _sub_inplace_tensor, input, other, alpha)
            return input
        return sub(input, other, alpha=alpha)
    if _number_keeps_dtype(input, other) and _decide(input) == 0:
        if _C.sub_inplace_scalar(input, other, alpha) is not NotImplemented:
            return input
    if _writable("sub_", input, (), torch.result_type(input, other) == input.dtype):
        call_op(_C.sub_inplace_scalar, ops.sub_inplace.Scalar, input, other, alpha)
        return input
    return sub(input, other, alpha=alpha)


def accumulate_(
    out: Tensor, tensors: Sequence[Tensor], weights: Optional[Union[Sequence[Number], Tensor]] = None
) -> Tensor:
    """``out + Σ weights[i] * tensors[i]`` in one pass, written into ``out`` when safe; see :func:`add_`.

    Saved for backward: as :func:`accumulate`; ``out`` itself is never saved.
    """
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("safe_ops.accumulate_ expects a non-empty list of tensors")
    if not isinstance(weights, Tensor) and _plain_case(out, tensors):
        if _C.accumulate_inplace(out, tensors, weights) is not NotImplemented:  # declines odd weight types
            return out
    weights_tensor = weights if isinstance(weights, Tensor) else None
    fits = _fits_operands(out, tensors, accumulate_dtype([out] + tensors, weights_tensor))
    others = tensors + ([weights_tensor] if weights_tensor is not None else [])
    if _writable("accumulate_", out, others, fits):
        if weights_tensor is not None:
            call_op(_C.accumulate_inplace_weights_tensor, ops.accumulate_inplace.weights_tensor,
                    out, tensors, weights_tensor)
        else:
            call_op(_C.accumulate_inplace, ops.accumulate_inplace.default,
                    out, tensors, None if weights is None else _weights_list(weights))
        return out
    # out + Σ w_i x_i as one functional accumulate, with weight 1 for out
    if weights_tensor is not None:
        return accumulate([out] + tensors, torch.cat([weights_tensor.new_ones(1), weights_tensor]))
    return accumulate([out] + tensors, None if weights is None else [1.0] + _weights_list(weights))


def addcmul_(input: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Number = 1) -> Tensor:
    """``input + value * tensor1 * tensor2``, in place when safe; see :func:`add_`.

    Saved for backward: as :func:`addcmul` (never ``input``).
    """
    others = (tensor1, tensor2)
    if _plain_case(input, others) and _C.addcmul_inplace(input, tensor1, tensor2, value) is not NotImplemented:
        return input
    fits = _fits_operands(input, others, accumulate_dtype((input,) + others, None))
    if _writable("addcmul_", input, others, fits):
        call_op(_C.addcmul_inplace, _addcmul_inplace, input, tensor1, tensor2, value)
        return input
    return addcmul(input, tensor1, tensor2, value=value)


def lerp_(input: Tensor, end: Tensor, weight: Union[Tensor, Number]) -> Tensor:
    """``input + weight * (end - input)``, in place when safe; see :func:`add_`. The EMA update:
    ``ema = safe_ops.lerp_(ema, x, 1 - decay)``.

    With a tensor weight that requires grad (in grad mode) the result is always a new tensor: the weight's
    gradient reads the original ``input``.
    """
    if isinstance(weight, Tensor):
        others = (end, weight)
        if not (weight.requires_grad and torch.is_grad_enabled()) and _plain_case(input, others):
            if _C.lerp_inplace_tensor(input, end, weight) is not NotImplemented:
                return input
        fits = end.dtype == input.dtype and weight.dtype == input.dtype and _fits_operands(input, others)
        if fits and torch.is_grad_enabled() and weight.requires_grad:
            fits = False
        if _writable("lerp_", input, others, fits):
            call_op(_C.lerp_inplace_tensor, ops.lerp_inplace.Tensor, input, end, weight)
            return input
        return lerp(input, end, weight)
    if _plain_case(input, (end,)) and _C.lerp_inplace_scalar(input, end, weight) is not NotImplemented:
        return input
    fits = end.dtype == input.dtype and _fits_operands(input, (end,))
    if _writable("lerp_", input, (end,), fits):
        call_op(_C.lerp_inplace_scalar, ops.lerp_inplace.Scalar, input, end, weight)
        return input
    return lerp(input, end, weight)
