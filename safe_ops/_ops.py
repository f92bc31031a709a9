"""The functional ops: thin wrappers over torch.ops.safe_ops.* that mirror torch's signatures.

Each call goes straight to one OpOverload: the overload is chosen here by Python type, and the autograd
formula runs in C++ (csrc/autograd/), so a call costs about what a torch op costs.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._native import ops

Number = Union[int, float, bool]

_add_tensor = ops.add.Tensor
_add_scalar = ops.add.Scalar
_sub_tensor = ops.sub.Tensor
_sub_scalar = ops.sub.Scalar
_accumulate = ops.accumulate.default
_accumulate_weights_tensor = ops.accumulate.weights_tensor
_addcmul = ops.addcmul.default
_lerp_scalar = ops.lerp.Scalar
_lerp_tensor = ops.lerp.Tensor


def add(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input + alpha * other``, like :func:`torch.add` (broadcasting, type promotion, ``other`` a number).

    Saved for backward: nothing (two shapes and ``alpha``). Never writes into its inputs.
    """
    if isinstance(other, Tensor):
        return _add_tensor(input, other, alpha=alpha)
    return _add_scalar(input, other, alpha)


def sub(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input - alpha * other``, like :func:`torch.sub`. Saved for backward: nothing. Never writes in place."""
    if isinstance(other, Tensor):
        return _sub_tensor(input, other, alpha=alpha)
    return _sub_scalar(input, other, alpha)


def _weights_list(weights: Sequence[Number]) -> list:
    return [float(w) for w in weights]


def accumulate(tensors: Sequence[Tensor], weights: Optional[Union[Sequence[Number], Tensor]] = None) -> Tensor:
    """``Σ weights[i] * tensors[i]`` in one pass over the inputs, with no intermediate tensors.

    ``weights``: None (all ones), a sequence of numbers, or a 1-D tensor of length K (differentiable). The
    tensors broadcast to one shape; the result dtype is torch's promotion of ``Σ weights[i] * tensors[i]``;
    float16/bfloat16 accumulate in float32 and round once.

    Saved for backward: with number weights, nothing; with a weights tensor, the tensors only if the weights
    need a gradient and the weights (K numbers) only if some tensor does. Never writes in place.
    """
    if isinstance(weights, Tensor):
        return _accumulate_weights_tensor(tensors, weights)
    return _accumulate(tensors, None if weights is None else _weights_list(weights))


def addcmul(input: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Number = 1) -> Tensor:
    """``input + value * tensor1 * tensor2``, like :func:`torch.addcmul`.

    Saved for backward: ``tensor2`` only if ``tensor1`` needs a gradient, ``tensor1`` only if ``tensor2`` does,
    nothing for ``input``. Never writes in place.
    """
    return _addcmul(input, tensor1, tensor2, value=value)


def lerp(input: Tensor, end: Tensor, weight: Union[Tensor, Number]) -> Tensor:
    """``input + weight * (end - input)``, like :func:`torch.lerp` (same formula, no type promotion).

    The EMA update is ``ema = lerp(ema, x, 1 - decay)``. Saved for backward: with a number weight, nothing;
    with a tensor weight, the weight only if ``input`` or ``end`` needs a gradient, and ``input`` and ``end``
    only if the weight does. Never writes in place.
    """
    if isinstance(weight, Tensor):
        return _lerp_tensor(input, end, weight)
    return _lerp_scalar(input, end, weight)
