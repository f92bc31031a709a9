"""Records of tensors saved for backward, for safe_ops.guard (see safe_ops/guard.py for the design).

One ``_Saved`` object is what the guard's pack hook returns: the ``SavedVariable`` that autograd keeps in the
graph owns it, so it lives exactly as long as the saved value can still be read by a backward. While it lives
it is listed in ``_live`` under the address of the storage it aliases, with the byte range it covers; its
``__del__`` takes it out again, so records never outlive their graph.
"""
from __future__ import annotations

import linecache
import math
import os
import threading
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .errors import InplaceHazardError

# storage address -> {id(record): weakref(record)}. Read without the lock (a dict lookup and a tuple() of its
# values are atomic under the GIL); changed only under it. RLock: a record's __del__ can run inside a critical
# section of the same thread when an allocation there triggers the garbage collector.
_live: Dict[int, Dict[int, "weakref.ref[_Saved]"]] = {}
_lock = threading.RLock()

# Overlap tests between strided (non-dense) views build a byte mask over the span they share: bounded here,
# and beyond it any byte-range overlap counts as a real one (conservative).
_MASK_LIMIT_BYTES = 1 << 22

PLAIN, COMPOSED, OPAQUE, INDEPENDENT = range(4)


class Site(NamedTuple):
    """A source location: the user's frame, not torch's or safe_ops' own."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def code(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def describe(self) -> str:
        text = self.code()
        return f"{self} (in {self.function}: `{text}`)" if text else f"{self} (in {self.function})"


_INTERNAL_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep for path in (torch.__file__, __file__)
)
_internal_code: Dict[Any, bool] = {}


def user_site(frame) -> Optional[Site]:
    """The first frame, from ``frame`` outwards, whose code is not in torch or safe_ops."""
    cache = _internal_code
    while frame is not None:
        code = frame.f_code
        internal = cache.get(code)
        if internal is None:
            if len(cache) > 50_000:
                cache.clear()
            name = code.co_filename
            internal = name.startswith(_INTERNAL_DIRS) or name.startswith("<frozen")
            cache[code] = internal
        if not internal:
            return Site(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


# Where a tensor's elements lie, as a plain tuple (the check runs on every saved tensor and every write):
# (storage address, byte lo, byte hi, dense, shape, strides, element size). ``dense``: every byte of [lo, hi)
# belongs to an element.
Extent = Tuple[int, int, int, bool, Tuple[int, ...], Tuple[int, ...], int]
KEY, LO, HI, DENSE, SHAPE, STRIDE, SIZE = range(7)


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
    return key, lo, lo + span * size, dense and span == numel, shape, stride, size


def _byte_offsets(e: Extent, start: int) -> Tensor:
    """Offsets (from the storage byte ``start``) of every byte of every element of a strided extent."""
    size = e[SIZE]
    offsets = torch.zeros((), dtype=torch.int64)
    for n, s in zip(e[SHAPE], e[STRIDE]):
        offsets = offsets.unsqueeze(-1) + torch.arange(n, dtype=torch.int64) * (s * size)
    return (offsets.reshape(-1, 1) + torch.arange(size, dtype=torch.int64)).reshape(-1) + start


def nbytes(e: Extent) -> int:
    n = e[SIZE]
    for d in e[SHAPE]:
        n *= d
    return n


def _disjoint_residues(a: Extent, b: Extent) -> bool:
    """Every element of either extent starts at its offset plus a multiple of g, the gcd of both extents'
    strides in bytes: if the bytes of an element of ``a`` and of ``b`` fall in disjoint windows modulo g, they
    never meet (interleaved views such as ``x[..., ::2]`` and ``x[..., 1::2]``, whatever their size)."""
    g = 0
    for e in (a, b):
        for n, s in zip(e[SHAPE], e[STRIDE]):
            if n > 1:
                g = math.gcd(g, s * e[SIZE])
    if g == 0 or a[SIZE] >= g or b[SIZE] >= g:
        return False
    shift = (b[LO] - a[LO]) % g
    return shift >= a[SIZE] and g - shift >= b[SIZE]


def elements_overlap(a: Extent, b: Extent) -> bool:
    """Whether two extents on one storage share a byte. Exact for dense ranges, for interleaved views, and for
    other strided views whose span fits ``_MASK_LIMIT_BYTES``; beyond that, overlapping byte ranges count as
    overlapping (a false alarm is possible there, never a miss)."""
    if a[HI] <= b[LO] or b[HI] <= a[LO]:
        return False
    if a[DENSE] and b[DENSE]:  # ranges without holes: intersecting ranges share a byte
        return True
    if _disjoint_residues(a, b):
        return False
    base = min(a[LO], b[LO])
    span = max(a[HI], b[HI]) - base
    if span > _MASK_LIMIT_BYTES or max(nbytes(a), nbytes(b)) > _MASK_LIMIT_BYTES // 8:
        return True
    mask = torch.zeros(span, dtype=torch.bool)
    mask[_byte_offsets(a, a[LO] - base)] = True
    return bool(mask[_byte_offsets(b, b[LO] - base)].any())


class _Saved:
    """A value saved for backward, as the guard's pack hook hands it to autograd.

    kind PLAIN: no user hooks; ``t`` is a detached alias of the saved tensor (it shares the version counter, so
    a write the guard did not see still fails at backward as it would without hooks). COMPOSED: the user's
    pack hook ran first and returned ``packed``, which holds tensors aliasing the saved memory (``t`` is one of
    them). OPAQUE: ``packed`` holds no tensor we can see; the saved memory is tracked through a weak reference
    to the tensor. INDEPENDENT: ``packed`` holds only copies; nothing to track.
    """

    __slots__ = (
        "kind", "t", "tref", "version", "packed", "unpack_hook", "copy", "ext", "registered", "shape", "dtype",
        "device", "seq", "node", "op", "tries", "site", "warned", "__weakref__",
    )

    def unpack(self) -> Any:
        kind = self.kind
        if self.copy is not None and kind != COMPOSED:
            return self.copy
        if self.copy is None and (
            self.warned is not None or (self.t is not None and self.t._version != self.version)
        ):
            raise InplaceHazardError(stale_message(self))
        if kind == PLAIN:
            return self.t
        return self.unpack_hook(self.packed)

    def saved_tensor(self, written: Tensor) -> Tensor:
        """The saved value as a tensor over the current memory (before it is copied)."""
        if self.t is not None and self.kind == PLAIN:
            return self.t
        e = self.ext
        view = torch.empty(0, dtype=self.dtype, device=written.device)
        return view.set_(written.untyped_storage(), e[LO] // e[SIZE], e[SHAPE], e[STRIDE])

    def alive(self) -> bool:
        return self.kind != OPAQUE or self.tref() is not None

    def __del__(self) -> None:
        if self.registered:
            try:
                unregister(self)
            except Exception:  # interpreter shutdown
                pass


def new_record(kind: int, t: Tensor) -> _Saved:
    r = _Saved.__new__(_Saved)
    r.kind = kind
    r.t = r.tref = r.packed = r.unpack_hook = r.copy = r.ext = r.seq = r.node = r.op = r.site = r.warned = None
    r.version = r.tries = 0
    r.registered = False
    r.shape = t.shape
    r.dtype = t.dtype
    r.device = t.device
    return r


def register(r: _Saved, ext: Extent) -> None:
    r.ext = ext
    key = ext[KEY]
    with _lock:
        bucket = _live.get(key)
        if bucket is None:
            bucket = _live[key] = {}
        bucket[id(r)] = weakref.ref(r)
        r.registered = True


def unregister(r: _Saved) -> None:
    with _lock:
        if not r.registered:
            return
        r.registered = False
        key = r.ext[KEY]
        bucket = _live.get(key)
        if bucket is not None:
            bucket.pop(id(r), None)
            if not bucket:
                del _live[key]


def live_count() -> int:
    with _lock:
        return sum(len(b) for b in _live.values())


def records_on(key: int) -> List[_Saved]:
    bucket = _live.get(key)
    if not bucket:
        return []
    found = []
    for ref in tuple(bucket.values()):
        r = ref()
        if r is not None and r.registered:
            if r.alive():
                found.append(r)
            else:
                unregister(r)
    return found


def tensors_in(obj: Any, depth: int = 3) -> List[Tensor]:
    """Tensors held by a pack hook's result, looked for in tuples, lists, dicts and object attributes."""
    if isinstance(obj, Tensor):
        return [obj]
    if depth == 0:
        return []
    if isinstance(obj, (tuple, list)):
        items = obj
    elif isinstance(obj, dict):
        items = obj.values()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return []
    found: List[Tensor] = []
    for item in items:
        found += tensors_in(item, depth - 1)
    return found


def replace_aliases(obj: Any, key: int, clone: Callable[[Tensor], Tensor], depth: int = 3) -> Any:
    """``obj`` with the tensors on storage ``key`` replaced by ``clone(tensor)`` (containers rebuilt, object
    attributes set in place)."""
    if isinstance(obj, Tensor):
        ext = extent(obj)
        return clone(obj) if ext is not None and ext[KEY] == key else obj
    if depth == 0:
        return obj
    if isinstance(obj, tuple):
        items = [replace_aliases(x, key, clone, depth - 1) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [replace_aliases(x, key, clone, depth - 1) for x in obj]
    if isinstance(obj, dict):
        return {k: replace_aliases(v, key, clone, depth - 1) for k, v in obj.items()}
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        for name, value in list(vars(obj).items()):
            new = replace_aliases(value, key, clone, depth - 1)
            if new is not value:
                setattr(obj, name, new)
    return obj


# ---- messages -----------------------------------------------------------------------------------------------

_FIX = (
    "Fix: write out of place (`y = y * 2` instead of `y.mul_(2)`), use safe_ops' in-place-when-safe ops "
    "(`y = safe_ops.add_(y, x)`, which copy when a write would be unsafe), `.clone()` the tensor before "
    "writing into it, or run the forward under `safe_ops.guard(mode=\"copy\")` to copy saved values on write."
)


def _shape(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def node_of(r: _Saved) -> str:
    if r.node is not None:
        return r.node
    if r.op is not None:
        return f"the backward node of {r.op}"
    return "an autograd node"


def describe_saved(r: _Saved, written: Optional[Extent] = None) -> str:
    where = r.site.describe() if r.site is not None else "an unknown line"
    text = f"a {_dtype(r.dtype)} tensor of shape {_shape(r.shape)} that {node_of(r)} saved for backward at {where}"
    if written is not None and r.ext is not None and (written[LO] > r.ext[LO] or written[HI] < r.ext[HI]):
        text += " (the write covers part of it)"
    return text


def hazard_message(op: str, site: Optional[Site], written: Tensor, ext: Extent, hits: List[_Saved],
                   self_write: bool) -> str:
    where = site.describe() if site is not None else "an unknown line"
    lines = [
        "safe_ops.guard: in-place write into memory that autograd saved for backward.",
        f"  write: {op} into a {_dtype(written.dtype)} tensor of shape {_shape(written.shape)} at {where}",
    ]
    for r in hits[:3]:
        lines.append(f"  saved: {describe_saved(r, ext)}")
    if len(hits) > 3:
        lines.append(f"  ... and {len(hits) - 3} more saved tensors on the same memory")
    if self_write:
        lines.append("  The op saves its own operand and then writes its output over it.")
    lines.append(
        "  The backward of that node reads the saved value: after this write it would compute wrong gradients "
        "(PyTorch reports it only when backward runs, and never for writes through `.data` or while "
        "saved_tensors_hooks are active)."
    )
    lines.append("  " + _FIX)
    return "\n".join(lines)


def stale_message(r: _Saved) -> str:
    if r.warned is not None:
        return (
            f"safe_ops.guard: one of the variables needed for gradient computation was overwritten in place at "
            f"{r.warned} (reported there by the guard's warning): {describe_saved(r)}. Backward would compute "
            f"wrong gradients from it. " + _FIX
        )
    return (
        f"safe_ops.guard: one of the variables needed for gradient computation has been modified by an inplace "
        f"operation: {describe_saved(r)} is at version {r.t._version}; expected version {r.version}. The guard "
        f"did not see the write: it happened outside `safe_ops.guard` (after the `with` block or in another "
        f"thread) or inside a torch.compile'd region. " + _FIX
    )
