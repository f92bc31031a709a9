"""Fake (meta) kernels for torch.compile and FakeTensor: same shape, dtype, device and strides as the real
kernels, which allocate their outputs through a TensorIterator. `_elementwise_empty` reproduces the
iterator's layout rules (ATen/TensorIterator.cpp: fast setup, then reorder_dimensions)."""
from __future__ import annotations

import functools
from typing import List, Sequence

import torch
from torch import Tensor

from . import _native  # noqa: F401  (the ops must be registered before their fakes)
from ._promotion import accumulate_dtype


def _device(tensors: Sequence[Tensor]) -> torch.device:
    # Same rule as csrc/ops.cpp common_device: 0-dim CPU tensors join other devices.
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


@torch.library.register_fake("safe_ops::add.Tensor")
def _add_tensor_fake(self, other, *, alpha=1):
    dtype = torch.result_type(self, other)
    return _elementwise_empty([self, other], dtype, _device([self, other]))


@torch.library.register_fake("safe_ops::sub.Tensor")
def _sub_tensor_fake(self, other, *, alpha=1):
    return _add_tensor_fake(self, other)


@torch.library.register_fake("safe_ops::add.Scalar")
def _add_scalar_fake(self, other, alpha=1):
    return _elementwise_empty([self], torch.result_type(self, other), self.device)


@torch.library.register_fake("safe_ops::sub.Scalar")
def _sub_scalar_fake(self, other, alpha=1):
    return _add_scalar_fake(self, other)


def _accumulate_fake_impl(tensors, weights_tensor=None):
    if len(tensors) == 0:
        raise RuntimeError("safe_ops.accumulate expects a non-empty list of tensors")
    dtype = accumulate_dtype(tensors, weights_tensor)
    return _elementwise_empty(list(tensors), dtype, _device(tensors))


@torch.library.register_fake("safe_ops::accumulate")
def _accumulate_fake(tensors, weights=None):
    return _accumulate_fake_impl(tensors)


@torch.library.register_fake("safe_ops::accumulate.weights_tensor")
def _accumulate_weights_tensor_fake(tensors, weights):
    return _accumulate_fake_impl(tensors, weights)


@torch.library.register_fake("safe_ops::addcmul")
def _addcmul_fake(self, tensor1, tensor2, *, value=1):
    operands = [self, tensor1, tensor2]
    return _elementwise_empty(operands, accumulate_dtype(operands, None), _device(operands))


@torch.library.register_fake("safe_ops::lerp.Scalar")
def _lerp_scalar_fake(self, end, weight):
    return _elementwise_empty([self, end], self.dtype, _device([self, end]))


@torch.library.register_fake("safe_ops::lerp.Tensor")
def _lerp_tensor_fake(self, end, weight):
    return _elementwise_empty([self, end, weight], self.dtype, _device([self, end, weight]))


for _name in (
    "add_inplace.Tensor",
    "add_inplace.Scalar",
    "sub_inplace.Tensor",
    "sub_inplace.Scalar",
    "accumulate_inplace",
    "accumulate_inplace.weights_tensor",
    "addcmul_inplace",
    "lerp_inplace.Scalar",
    "lerp_inplace.Tensor",
):
    # The in-place kernels return nothing; their fakes only have to exist.
    torch.library.register_fake(f"safe_ops::{_name}")(lambda *args, **kwargs: None)


@torch.library.register_fake("safe_ops::scale_many")
def _scale_many_fake(grad, scales):
    return [_elementwise_empty([grad], grad.dtype, grad.device) for _ in scales]


@torch.library.register_fake("safe_ops::scale_many.weights_tensor")
def _scale_many_weights_tensor_fake(grad, scales):
    return [_elementwise_empty([grad], grad.dtype, grad.device) for _ in range(scales.shape[0])]


@torch.library.register_fake("safe_ops::dot_many")
def _dot_many_fake(grad, tensors):
    return grad.new_empty((len(tensors),), dtype=torch.float64)


@torch.library.register_fake("safe_ops::addcmul_backward")
def _addcmul_backward_fake(grad, tensor1, tensor2, value, output_mask):
    want1, want2 = output_mask
    if want1 and want2:
        inputs = [grad, tensor1, tensor2]
        return (_elementwise_empty(inputs, grad.dtype, grad.device),
                _elementwise_empty(inputs, grad.dtype, grad.device))
    if want1:
        return _elementwise_empty([grad, tensor2], grad.dtype, grad.device), None
    if want2:
        return None, _elementwise_empty([grad, tensor1], grad.dtype, grad.device)
    return None, None


@torch.library.register_fake("safe_ops::lerp_backward")
def _lerp_backward_fake(grad, self, end, weight, output_mask):
    inputs = [grad]
    if output_mask[0] or output_mask[1]:
        inputs.append(weight)
    if output_mask[2]:
        inputs += [self, end]
    return tuple(
        _elementwise_empty(inputs, grad.dtype, grad.device) if wanted else None for wanted in output_mask
    )
