"""Copy-on-write (``mode="copy"``): clone the saved values a write is about to overwrite, for backward to read."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor

from . import _records as rec
from ._packed import replace_aliases
from ._records import COMPOSED, Saved


def copy_saved(hits: List[Saved], written: Tensor) -> Tuple[int, int]:
    """Copy the saved values the write is about to overwrite: one clone per distinct saved view, or one clone
    of the bytes they span when that is smaller (``a @ a.t()`` saves ``a`` and its transpose: one copy).
    Returns (copies made, bytes copied); the records leave the registry (their memory is no longer theirs)."""
    memo: Dict[tuple, Tensor] = {}
    made = [0, 0]
    views = [r for r in hits if r.kind != COMPOSED]
    if len(views) > 1:
        lo = min(r.ext.lo for r in views)
        hi = max(r.ext.hi for r in views)
        distinct = {(r.ext.lo, r.ext.shape, r.ext.stride, r.dtype): r.ext.nbytes for r in views}
        if hi - lo < sum(distinct.values()) and all((r.ext.lo - lo) % r.ext.size == 0 for r in views):
            span = torch.empty(0, dtype=torch.uint8, device=written.device)
            buffer = span.set_(written.untyped_storage(), lo, (hi - lo,), (1,)).clone()
            made[0], made[1] = 1, hi - lo
            for r in views:
                view = torch.empty(0, dtype=r.dtype, device=written.device)
                e = r.ext
                r.copy = view.set_(buffer.untyped_storage(), (e.lo - lo) // e.size, e.shape, e.stride)
                r.t = None
                rec.unregister(r)
            hits = [r for r in hits if r.kind == COMPOSED]

    def clone(x: Tensor) -> Tensor:
        key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)
        c = memo.get(key)
        if c is None:
            c = memo[key] = x.clone()
            made[0] += 1
            made[1] += c.numel() * c.element_size()
        return c

    for r in hits:
        if r.kind == COMPOSED:  # unpack runs the user's hook on the pack with copies in place of aliases
            r.packed = replace_aliases(r.packed, r.ext.key, clone)
            r.copy = True
        else:
            r.copy = clone(r.saved_tensor(written))
        r.t = None
        rec.unregister(r)
    return made[0], made[1]
