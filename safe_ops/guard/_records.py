"""Records of tensors saved for backward, and the registry of the live ones.

One ``Saved`` object is what the guard's pack hook returns: the ``SavedVariable`` that autograd keeps in the
graph owns it, so it lives exactly as long as the saved value can still be read by a backward. While it lives
it is listed in ``_live`` under the address of the storage it aliases, with the byte range it covers; its
``__del__`` takes it out again, so records never outlive their graph.
"""
from __future__ import annotations

import threading
import weakref
from enum import IntEnum
from typing import Any, Dict, List

import torch
from torch import Tensor

from ..errors import InplaceHazardError
from ._extent import Extent
from ._messages import stale_message

# storage address -> {id(record): weakref(record)}. Read without the lock (a dict lookup and a tuple() of its
# values are atomic under the GIL); changed only under it. RLock: a record's __del__ can run inside a critical
# section of the same thread when an allocation there triggers the garbage collector.
_live: Dict[int, Dict[int, "weakref.ref[Saved]"]] = {}
_lock = threading.RLock()


class Kind(IntEnum):
    """How a record holds the saved value.

    PLAIN: no user hooks; ``t`` is a detached alias of the saved tensor (it shares the version counter, so a
    write the guard did not see still fails at backward as it would without hooks). COMPOSED: the user's pack
    hook ran first and returned ``packed``, which holds tensors aliasing the saved memory (``t`` is one of
    them). OPAQUE: ``packed`` holds no tensor we can see; the saved memory is tracked through a weak reference to
    the tensor. INDEPENDENT: ``packed`` holds only copies; nothing to track.
    """

    PLAIN = 0
    COMPOSED = 1
    OPAQUE = 2
    INDEPENDENT = 3


PLAIN, COMPOSED, OPAQUE, INDEPENDENT = Kind


class Saved:
    """A value saved for backward, as the guard's pack hook hands it to autograd (see ``Kind``).

    ``ext`` is the extent it is registered under; ``version`` the version of ``t`` the guard accepts;
    ``copy`` the copy-on-write clone backward reads instead (``True`` for COMPOSED records, whose ``packed``
    then holds the clones); ``seq``/``node``/``op``/``tries`` name the node that saved it (see
    ``ThreadState.attribute``); ``site`` the user's line that ran the op; ``warned`` the line a warn-mode guard
    let write into it.
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
        return view.set_(written.untyped_storage(), e.lo // e.size, e.shape, e.stride)

    def alive(self) -> bool:
        return self.kind != OPAQUE or self.tref() is not None

    def __del__(self) -> None:
        if self.registered:
            try:
                unregister(self)
            except Exception:  # interpreter shutdown
                pass


def new_record(kind: Kind, t: Tensor) -> Saved:
    r = Saved.__new__(Saved)
    r.kind = kind
    r.t = r.tref = r.packed = r.unpack_hook = r.copy = r.ext = r.seq = r.node = r.op = r.site = r.warned = None
    r.version = r.tries = 0
    r.registered = False
    r.shape = t.shape
    r.dtype = t.dtype
    r.device = t.device
    return r


def register(r: Saved, ext: Extent) -> None:
    r.ext = ext
    key = ext.key
    with _lock:
        bucket = _live.get(key)
        if bucket is None:
            bucket = _live[key] = {}
        bucket[id(r)] = weakref.ref(r)
        r.registered = True


def unregister(r: Saved) -> None:
    with _lock:
        if not r.registered:
            return
        r.registered = False
        key = r.ext.key
        bucket = _live.get(key)
        if bucket is not None:
            bucket.pop(id(r), None)
            if not bucket:
                del _live[key]


def live_count() -> int:
    with _lock:
        return sum(len(b) for b in _live.values())


def records_on(key: int) -> List[Saved]:
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
