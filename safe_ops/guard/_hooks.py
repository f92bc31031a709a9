"""The guard's place on the saved_tensors_hooks stack: torch's (private) entry points to that stack, the patch
that composes hooks a user pushes inside a guard with the guard's own, and ``hooks_are_only_guards()``.

The thread state (``_state``) tells it what the guard pushed through two thread-local slots; ``set_thread_hooks``
also tells the core, through torch's op registry (``torch.ops.safe_ops._set_guard_pack_hook``, defined in
``csrc/core/inplace_decision.cpp``), so that its in-place decision need not copy for the guard's hooks alone: the
core never imports the guard, and the guard imports nothing from safe_ops.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Tuple

import torch

Hook = Callable[..., Any]

_autograd_c = torch._C._autograd
# The originals: while a guard is active the module attribute is replaced by `_push_composed`.
push = _autograd_c._push_saved_tensors_default_hooks
pop = _autograd_c._pop_saved_tensors_default_hooks

# Per thread, while a guard's hooks are pushed there: `plain_pack`, the guard's pack hook when it was pushed
# with no user hook under it (else None), and `compose`, which wraps a user's (pack, unpack) in the guard's.
_tls = threading.local()

_patch_lock = threading.Lock()
_patch_users = 0


def top_hooks() -> Optional[Tuple[Hook, Hook]]:
    """The saved_tensors_hooks active now, if torch can tell (absent before 2.1: then None)."""
    top = getattr(_autograd_c, "_top_saved_tensors_default_hooks", None)
    if top is None:
        return None
    try:
        return top(False)
    except TypeError:
        return top()


def _tell_core(plain_pack: Optional[Hook]) -> None:
    # The address of the pack hook (CPython's id), which the core compares with the top of the hooks stack.
    torch.ops.safe_ops._set_guard_pack_hook(0 if plain_pack is None else id(plain_pack))


def set_thread_hooks(plain_pack: Optional[Hook], compose: Callable[[Hook, Hook], Tuple[Hook, Hook]]) -> None:
    _tls.plain_pack = plain_pack
    _tls.compose = compose
    _tell_core(plain_pack)


def clear_thread_hooks() -> None:
    _tls.plain_pack = None
    _tls.compose = None
    _tell_core(None)


def hooks_are_only_guards() -> bool:
    """Whether the saved_tensors_hooks active on this thread are a guard's own, composed with no user hook.

    The core's in-place decision asks the same in C++ (set_thread_hooks tells it the guard's pack hook): it copies
    whenever hooks are active because a hook may hold a tensor where reference counts cannot see it, but a guard's
    record holds a detached alias of each saved tensor, which does raise its storage's use count, so under the
    guard alone that rule is not needed.
    """
    plain = getattr(_tls, "plain_pack", None)
    if plain is None:
        return False
    top = top_hooks()
    return top is not None and top[0] == plain


def _push_composed(pack_hook: Hook, unpack_hook: Hook) -> None:
    compose = getattr(_tls, "compose", None)
    if compose is not None:
        pack_hook, unpack_hook = compose(pack_hook, unpack_hook)
    push(pack_hook, unpack_hook)


def patch_push(delta: int) -> None:
    """Count a guard in (+1) or out (-1): while any is active (in any thread), hooks pushed through
    ``torch.autograd.graph.saved_tensors_hooks`` go through ``_push_composed``."""
    global _patch_users
    with _patch_lock:
        _patch_users += delta
        try:
            _autograd_c._push_saved_tensors_default_hooks = _push_composed if _patch_users else push
        except (AttributeError, TypeError):  # a torch whose module refuses: hooks pushed inside stay uncomposed
            pass
