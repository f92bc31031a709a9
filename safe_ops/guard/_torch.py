"""The torch entry points the guard needs that are private or missing in some releases, each with a fallback,
so a torch that moves one degrades that feature only."""
from __future__ import annotations

import threading
from typing import Any, Callable, ContextManager, Optional

import torch
import torch.utils._python_dispatch
from torch import Tensor

# The sequence number autograd gives the next node: tells the node being built from older ones.
sequence_nr: Optional[Callable[[], int]] = getattr(torch.autograd, "_get_sequence_nr", None) or getattr(
    torch._C._autograd, "_get_sequence_nr", None
)
is_compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
increment_version: Optional[Callable[[Tensor], None]] = getattr(torch.autograd.graph, "increment_version", None)
get_ident = threading.get_ident

_dispatch = torch.utils._python_dispatch
# The innermost TorchDispatchMode of this thread, and a context manager that takes it off the stack meanwhile.
current_dispatch_mode: Optional[Callable[[], Any]] = getattr(_dispatch, "_get_current_dispatch_mode", None)
pop_mode_temporarily: Optional[Callable[[], ContextManager[Any]]] = getattr(_dispatch, "_pop_mode_temporarily", None)

_DisableTorchDispatch = getattr(torch._C, "_DisableTorchDispatch", None)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def alias(t: Tensor) -> Tensor:
    """``t.detach()``: same memory and version counter, no autograd history (no reference cycle through the
    node that saves an output). For plain tensors, skip the Python dispatch (the guard's own mode) on the way."""
    if _DisableTorchDispatch is not None and type(t) in _PLAIN_TYPES:
        with _DisableTorchDispatch():
            return t.detach()
    return t.detach()
