"""The functional ops: thin wrappers that mirror torch's signatures.

A call goes to the C fast entry point for its signature (csrc/python_module.cpp), which calls the op through
the dispatcher; the autograd formula runs in C++ (csrc/autograd/), so a call costs about what a torch op
costs. Under torch.compile, or when the fast entry declines (tensor subclasses, torch-function modes, unusual
scalars), the same op is called through torch.ops.safe_ops, which dynamo traces and which handles everything.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from torch import Tensor
from torch.compiler import is_compiling

from . import _C
from ._native import ops

Number = Union[int, float, bool]


def call_op(fast: Callable, slow: Callable, *args):
    """`fast(*args)` (a _C entry point) unless compiling or it declines; else `slow(*args)` (torch.ops)."""
    if not is_compiling():
        result = fast(*args)
        if result is not NotImplemented:
            return result
    return slow(*args)


def keyword_last(overload, keyword: str) -> Callable:
    """`overload` taking its keyword-only last argument positionally, the order the fast entries use."""
    return lambda *args: overload(*args[:-1], **{keyword: args[-1]})


def _accumulate(tensors, weights):
    # torch.ops path: any sequence of tensors, any numbers as weights (the fast entry takes lists of floats)
    return ops.accumulate.default(list(tensors), None if weights is None else _weights_list(weights))


def _accumulate_weights_tensor(tensors, weights):
    return ops.accumulate.weights_tensor(list(tensors), weights)


_add_tensor = keyword_last(ops.add.Tensor, "alpha")
_sub_tensor = keyword_last(ops.sub.Tensor, "alpha")
_addcmul = keyword_last(ops.addcmul.default, "value")


def add(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input + alpha * other``, like :func:`torch.add` (broadcasting, type promotion, ``other`` a number).

    Saved for backward: nothing (two shapes and ``alpha``). Never writes into its inputs.
    """
    if isinstance(other, Tensor):
        return call_op(_C.add_tensor, _add_tensor, input, other, alpha)
    return call_op(_C.add_scalar, ops.add.Scalar, input, other, alpha)


def sub(input: Tensor, other: Union[Tensor, Number], *, alpha: Number = 1) -> Tensor:
    """``input - alpha * other``, like :func:`torch.sub`. Saved for backward: nothing. Never writes in place."""
    if isinstance(other, Tensor):
        return call_op(_C.sub_tensor, _sub_tensor, input, other, alpha)
    return call_op(_C.sub_scalar, ops.sub.Scalar, input, other, alpha)


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
        return call_op(_C.accumulate_weights_tensor, _accumulate_weights_tensor, tensors, weights)
    return call_op(_C.accumulate, _accumulate, tensors, weights)


def addcmul(input: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Number = 1) -> Tensor:
    """``input + value * tensor1 * tensor2``, like :func:`torch.addcmul`.

    Saved for backward: ``tensor2`` only if ``tensor1`` needs a gradient, ``tensor1`` only if ``tensor2`` does,
    nothing for ``input``. Never writes in place.
    """
    return call_op(_C.addcmul, _addcmul, input, tensor1, tensor2, value)


def lerp(input: Tensor, end: Tensor, weight: Union[Tensor, Number]) -> Tensor:
    """``input + weight * (end - input)``, like :func:`torch.lerp` (same formula, no type promotion).

    The EMA update is ``ema = lerp(ema, x, 1 - decay)``. Saved for backward: with a number weight, nothing;
    with a tensor weight, the weight only if ``input`` or ``end`` needs a gradient, and ``input`` and ``end``
    only if the weight does. Never writes in place.
    """
    if isinstance(weight, Tensor):
        return call_op(_C.lerp_tensor, ops.lerp.Tensor, input, end, weight)
    return call_op(_C.lerp_scalar, ops.lerp.Scalar, input, end, weight)
