"""Where a tensor's elements lie in its storage, and whether two such extents share a byte."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

# Overlap tests between strided (non-dense) views build a byte mask over the span they share: bounded here,
# and beyond it any byte-range overlap counts as a real one (conservative).
MASK_LIMIT_BYTES = 1 << 22


class Extent(NamedTuple):
    """The bytes a tensor's elements cover: storage address ``key``, byte range [lo, hi), ``dense`` when every
    byte of the range belongs to an element, and the shape, strides (elements) and element size behind it."""

    key: int
    lo: int
    hi: int
    dense: bool
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    size: int

    @property
    def nbytes(self) -> int:
        n = self.size
        for d in self.shape:
            n *= d
        return n


_new_extent = tuple.__new__  # the check runs on every saved tensor and every write: skip NamedTuple.__new__


def extent(t: Tensor) -> Optional[Extent]:
    """None for tensors that hold no bytes (empty) or have no storage (sparse, meta, some subclasses)."""
    try:
        key = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return None
    if not key:
        return None
    shape = tuple(t.shape)
    stride = t.stride()
    span = numel = 1
    dense = True
    for n, s in zip(shape, stride):
        if n == 0:
            return None
        numel *= n
        span += (n - 1) * s
        if s == 0 and n > 1:
            dense = False
    size = t.element_size()
    lo = t.storage_offset() * size
    return _new_extent(Extent, (key, lo, lo + span * size, dense and span == numel, shape, stride, size))


def _byte_offsets(e: Extent, start: int) -> Tensor:
    """Offsets (from the storage byte ``start``) of every byte of every element of a strided extent."""
    size = e.size
    offsets = torch.zeros((), dtype=torch.int64)
    for n, s in zip(e.shape, e.stride):
        offsets = offsets.unsqueeze(-1) + torch.arange(n, dtype=torch.int64) * (s * size)
    return (offsets.reshape(-1, 1) + torch.arange(size, dtype=torch.int64)).reshape(-1) + start


def _disjoint_residues(a: Extent, b: Extent) -> bool:
    """Every element of either extent starts at its offset plus a multiple of g, the gcd of both extents'
    strides in bytes: if the bytes of an element of ``a`` and of ``b`` fall in disjoint windows modulo g, they
    never meet (interleaved views such as ``x[..., ::2]`` and ``x[..., 1::2]``, whatever their size)."""
    g = 0
    for e in (a, b):
        for n, s in zip(e.shape, e.stride):
            if n > 1:
                g = math.gcd(g, s * e.size)
    if g == 0 or a.size >= g or b.size >= g:
        return False
    shift = (b.lo - a.lo) % g
    return shift >= a.size and g - shift >= b.size


def elements_overlap(a: Extent, b: Extent) -> bool:
    """Whether two extents on one storage share a byte. Exact for dense ranges, for interleaved views, and for
    other strided views whose span fits ``MASK_LIMIT_BYTES``; beyond that, overlapping byte ranges count as
    overlapping (a false alarm is possible there, never a miss)."""
    if a.hi <= b.lo or b.hi <= a.lo:
        return False
    if a.dense and b.dense:  # ranges without holes: intersecting ranges share a byte
        return True
    if _disjoint_residues(a, b):
        return False
    base = min(a.lo, b.lo)
    span = max(a.hi, b.hi) - base
    if span > MASK_LIMIT_BYTES or max(a.nbytes, b.nbytes) > MASK_LIMIT_BYTES // 8:
        return True
    mask = torch.zeros(span, dtype=torch.bool)
    mask[_byte_offsets(a, a.lo - base)] = True
    return bool(mask[_byte_offsets(b, b.lo - base)].any())
