"""Backward runs without the guard's dispatch mode.

The mode costs a Python dispatch per op, and a backward runs about twice the forward's ops: with the mode on,
a training step that runs backward inside a guard (a whole program run under one) took 2x as long instead of
1.6x. What backward reads is still checked: a write into a saved value made during backward fails when it is
unpacked (the guard's version check), as it does in PyTorch; tensors saved during backward
(``create_graph=True``) are still recorded, and writes into them after backward are caught.

While any guard is active, ``torch.autograd.backward`` (which ``Tensor.backward`` calls) and
``torch.autograd.grad`` take this thread's guard mode off the dispatch stack for their duration when it is the
innermost mode (a mode the user entered inside the guard stays, and so does the guard's under it).
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict

import torch.autograd

from ._mode import GuardMode
from ._torch import current_dispatch_mode, get_ident, pop_mode_temporarily

_ORIGINALS: Dict[str, Callable[..., Any]] = {"backward": torch.autograd.backward, "grad": torch.autograd.grad}


def _unwatched(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        mode = current_dispatch_mode() if current_dispatch_mode is not None else None
        if type(mode) is not GuardMode or pop_mode_temporarily is None or mode.th.ident != get_ident():
            return fn(*args, **kwargs)
        th = mode.th
        mark = len(th.pending)
        with pop_mode_temporarily():
            try:
                return fn(*args, **kwargs)
            finally:
                # Saved during backward (create_graph): no op of ours comes to name their node; leave them
                # unnamed rather than bind them to the next forward op.
                del th.pending[mark:]

    return run


_PATCHED = {name: _unwatched(fn) for name, fn in _ORIGINALS.items()}
_lock = threading.Lock()
_users = 0


def patch_backward(delta: int) -> None:
    """Count a guard in (+1) or out (-1): while any is active, the public backward entry points are patched."""
    global _users
    with _lock:
        _users += delta
        for name in _ORIGINALS:
            setattr(torch.autograd, name, (_PATCHED if _users else _ORIGINALS)[name])
