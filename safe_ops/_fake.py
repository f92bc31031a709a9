"""Fake (meta) kernels for torch.compile and FakeTensor: same shape, dtype, device and strides as the real
kernels, which allocate their outputs through a TensorIterator. Registered for every declared op
(_declarations.py) by its dtype rule, and for every backward op by its declared kind; no op is named here.
`_elementwise_empty` reproduces the iterator's layout rules (ATen/TensorIterator.cpp: fast setup, then
reorder_dimensions)."""
from __future__ import annotations

import functools
from typing import List, Sequence

import torch
from torch import Tensor

from . import _native  # noqa: F401  (the ops must be registered before their fakes)
from ._declarations import BACKWARD_OPS, FOREACH_OPS, OPS, Op, Overload, qualified
from ._promotion import accumulate_dtype
from ._twin import aten_op, uses_twin


def _device(tensors: Sequence[Tensor]) -> torch.device:
    # Same rule as csrc/core/op_support.cpp common_device: 0-dim CPU tensors join other devices.
    for t in tensors:
        if not (t.dim() == 0 and t.device.type == "cpu"):
            return t.device
    return tensors[0].device


def is_non_overlapping_and_dense(t: Tensor) -> bool:
    """TensorImpl::compute_non_overlapping_and_dense (torch._prims_common renamed its copy across versions)."""
    if t.dim() == 1:
        return t.shape[0] < 2 or t.stride(0) == 1
    def before(a: int, b: int) -> int:  # the C++ comparator; bool() guards on symbolic sizes
        if bool(t.shape[a] < 2):
            return 1
        if bool(t.shape[b] < 2):
            return -1
        return -1 if bool(t.stride(a) < t.stride(b)) else (1 if bool(t.stride(b) < t.stride(a)) else 0)

    expected = 1
    for d in sorted(range(t.dim()), key=functools.cmp_to_key(before)):
        if bool(t.shape[d] < 2):
            return True
        if t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def _operand_strides(t: Tensor, dtype: torch.dtype) -> List[int]:
    # The real op converts operands with .to(dtype), which keeps strides only for non-overlapping dense tensors.
    if t.dtype != dtype and not is_non_overlapping_and_dense(t):
        return list(torch._prims_common.make_contiguous_strides_for(t.shape))
    return list(t.stride())


def _elementwise_empty(inputs: Sequence[Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    shape = list(torch.broadcast_shapes(*(t.shape for t in inputs)))
    ndim = len(shape)
    if all(list(t.shape) == shape for t in inputs):
        if all(t.is_contiguous() for t in inputs):
            return torch.empty(shape, dtype=dtype, device=device)
        if ndim == 4 and all(t.is_contiguous(memory_format=torch.channels_last) for t in inputs):
            return torch.empty(shape, dtype=dtype, device=device, memory_format=torch.channels_last)
        strides = [_operand_strides(t, dtype) for t in inputs]
        if all(is_non_overlapping_and_dense(t) for t in inputs) and all(s == strides[0] for s in strides):
            return torch.empty_strided(shape, strides[0], dtype=dtype, device=device)
    if ndim <= 1:
        return torch.empty(shape, dtype=dtype, device=device)
    # Each operand's strides at the broadcast shape: 0 along broadcast dimensions.
    operand_strides = []
    for t in inputs:
        pad = ndim - t.dim()
        own = _operand_strides(t, dtype)
        operand_strides.append(
            [0] * pad + [0 if t.shape[i] == 1 and shape[pad + i] != 1 else own[i] for i in range(t.dim())]
        )

    def should_swap(dim0: int, dim1: int) -> int:
        for strides in operand_strides:
            s0, s1 = strides[dim0], strides[dim1]
            if s0 == 0 or s1 == 0:
                continue
            if s0 < s1:
                return -1
            if s0 > s1:
                return 1
            if shape[dim0] > shape[dim1]:
                return 1
        return 0

    perm = list(range(ndim - 1, -1, -1))  # perm[0] is the fastest-moving dimension
    for i in range(1, ndim):
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    if perm == list(range(ndim - 1, -1, -1)):
        return torch.empty(shape, dtype=dtype, device=device)
    out_strides = [0] * ndim
    running = 1
    for dim in perm:
        out_strides[dim] = running
        running *= shape[dim]
    return torch.empty_strided(shape, out_strides, dtype=dtype, device=device)


def _operands(op: Op, overload: Overload, args: tuple, kwargs: dict):
    """The fake's arguments bound to schema names: (elementwise tensors, coefficient tensors, numbers)."""
    schema = overload.parsed()
    bound = {a.name: a.default for a in schema}
    bound.update(zip((a.name for a in schema), args))
    bound.update(kwargs)
    tensor_names = {a.name for o in op.overloads for a in o.parsed() if a.type == "Tensor"}
    elementwise, coefficients, numbers = [], [], []
    for arg, param in zip(schema, op.params):
        value = bound[arg.name]
        if arg.type == "Tensor[]":
            if len(value) == 0:
                raise RuntimeError(f"safe_ops.{op.name} expects a non-empty list of tensors")
            elementwise += list(value)
        elif arg.type == "Tensor":
            (coefficients if param in op.coefficients else elementwise).append(value)
        elif arg.type == "Scalar" and arg.name in tensor_names:
            numbers.append(value)
    return elementwise, coefficients, numbers


def _result_dtype(op: Op, elementwise, coefficients, numbers) -> torch.dtype:
    if op.dtype == "first":
        return elementwise[0].dtype
    dtype = accumulate_dtype(elementwise, coefficients[0] if coefficients else None)
    for n in numbers:  # a number counts only where its category is higher than the tensors'
        dtype = torch.result_type(torch.empty(0, dtype=dtype), n)
    return dtype


def _register_functional(op: Op, overload: Overload) -> None:
    def fake(*args, **kwargs):
        if op.twin and uses_twin((*args, *kwargs.values()), inplace=False, promotes=op.dtype == "promote"):
            return aten_op(op.name, overload.name, inplace=False)(*args, **kwargs)
        elementwise, coefficients, numbers = _operands(op, overload, args, kwargs)
        dtype = _result_dtype(op, elementwise, coefficients, numbers)
        return _elementwise_empty(elementwise, dtype, _device(elementwise))

    torch.library.register_fake(f"safe_ops::{qualified(op.name, overload.name)}")(fake)


def _register_inplace(op: Op, overload: Overload) -> None:
    # The in-place kernels return nothing; their fakes check only what torch's in-place twin would.
    def fake(*args, **kwargs):
        if op.twin and uses_twin((*args, *kwargs.values()), inplace=True):
            aten_op(op.name, overload.name, inplace=True)(*args, **kwargs)

    torch.library.register_fake(f"safe_ops::{qualified(f'{op.name}_inplace', overload.name)}")(fake)


for _op in OPS:
    for _overload in _op.overloads:
        _register_functional(_op, _overload)
        _register_inplace(_op, _overload)


def _foreach_fake(self, operands, scalars, scalar_tensor):
    # In place over lists, returning nothing; the checks a wrong device or count would fail on in the kernel.
    # A CPU tensor of numbers joins members on any device (csrc/ops/foreach.cpp), as torch's CPU scalar tensors do.
    joins = scalar_tensor is not None and scalar_tensor.device.type != "cpu"
    tensors = list(self) + list(operands) + ([scalar_tensor] if joins else [])
    if not self or len(operands) % len(self):
        raise RuntimeError(f"safe_ops foreach: {len(operands)} operands for {len(self)} members")
    for t in tensors:
        if t.device != self[0].device:
            raise RuntimeError(f"safe_ops foreach: expected every tensor on {self[0].device}, got one on {t.device}")


for _foreach_op in FOREACH_OPS:
    torch.library.register_fake(f"safe_ops::{_foreach_op.name}_inplace")(_foreach_fake)


def _scale_fake(grad, scales):
    # "scale": one tensor like grad per scale (a list of numbers, or a 1-D tensor of them).
    n = scales.shape[0] if isinstance(scales, Tensor) else len(scales)
    return [_elementwise_empty([grad], grad.dtype, grad.device) for _ in range(n)]


def _dot_fake(grad, tensors):
    # "dot": one float64 number per tensor.
    return grad.new_empty((len(tensors),), dtype=torch.float64)


def _masked_fake(grad, *rest):
    # "masked": (grad, operands..., [scalars...], output_mask): each requested gradient at the broadcast of grad and
    # the operands passed (autograd passes exactly those the requested gradients read).
    output_mask = rest[-1]
    inputs = [grad] + [t for t in rest[:-1] if isinstance(t, Tensor)]
    return tuple(_elementwise_empty(inputs, grad.dtype, grad.device) if want else None for want in output_mask)


_BACKWARD_FAKES = {"scale": _scale_fake, "dot": _dot_fake, "masked": _masked_fake}  # by BackwardOp.kind

for _backward in BACKWARD_OPS:
    torch.library.register_fake(f"safe_ops::{qualified(_backward.name, _backward.overload)}")(
        _BACKWARD_FAKES[_backward.kind])
