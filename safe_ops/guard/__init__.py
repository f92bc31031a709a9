"""safe_ops.guard(): find in-place writes into values autograd saved for backward, at the line that writes.

PyTorch notices such a write only when backward reads the saved value (and points at the op whose backward
failed), and never notices it for writes through ``.data`` or while ``saved_tensors_hooks`` are active.

    with safe_ops.guard("raise"):      # or "warn", "copy"; also @safe_ops.guard("warn") on a function
        loss = model(x)
    python -m safe_ops.guard train.py  # the whole program, unchanged (see _cli)

This module is callable: ``safe_ops.guard(mode)`` is ``Guard(mode)``.

Design (one module per job)
---------------------------
- ``_records``: a ``saved_tensors_hooks`` pack hook records every tensor saved for backward while a guard is
  active: which storage it aliases and the byte range it covers (``_extent``), shape and dtype, the user's
  source line, and the autograd node that saved it. The record *is* the object the pack hook returns, so the
  ``SavedVariable`` in the graph owns it: when the graph is freed (after backward, or when its outputs die) the
  record dies and leaves the registry (a dict keyed by storage address). The record keeps a detached alias of
  the tensor, which shares its version counter, and the unpack hook repeats PyTorch's version check, so a write
  the guard could not see (made after the ``with`` block) still fails at backward instead of passing silently.
- ``_mode``: a ``TorchDispatchMode`` sees every aten op below autograd. For ops whose schema writes an
  argument (``_writes``: ``Tensor(a!)``: ``add_``, ``copy_``, ``index_put_``, ``out=`` ...), it looks the
  written tensor's storage up in the registry (one dict lookup; nothing else for ops that write nothing) and
  tests the byte ranges, exactly (element by element) for strided views.
- ``_state`` (per thread) acts on a hit: ``raise`` raises ``InplaceHazardError`` from inside the op, so the
  traceback ends at the writing line and nothing is written; ``warn`` warns once per source line
  (``_notices``), lets the write happen and marks the record, so a backward that reads it fails instead of
  computing wrong gradients; ``copy`` (``_cow``) clones the saved value just before the write (one clone of the
  bytes several saved views share) and the unpack hook hands the clone to backward. Reports: ``_messages``.
- The node that saved a tensor: the pack hook reads autograd's sequence number (the node under construction is
  the newest one on the thread); the node object is found from the saving op's output once autograd has
  attached it, at the next op or pack.
- ``_hooks``: hooks the user pushes inside the guard (``saved_tensors_hooks``, ``save_on_cpu``,
  checkpointing) and hooks already active when it is entered are composed with the guard's: the user's pack
  hook runs first and the guard tracks whatever in its result still aliases the saved memory (``_packed``;
  nothing for checkpointing, which recomputes; a result with no visible tensor is assumed to alias it).
- Writes that change metadata only (``t_``, ``resize_``, ``set_`` ...) are not hazards: records keep their own
  alias. A checked write outside a record's bytes that still bumps its shared version counter is accepted.
  While any dispatch mode is active PyTorch's ``_foreach_*_`` ops skip version bumps on tensors that require
  grad: the mode bumps them, so graphs built outside the guard keep PyTorch's own check.
- ``_backward``: backward (``Tensor.backward``, ``torch.autograd.grad``) runs without the mode, which would
  double a training step's cost; what backward reads is still checked when it is unpacked.
- ``_torch``: the private torch entry points used, each with a fallback.
- ``__main__``, ``_cli`` (arguments, running the program as Python would) and ``_session`` (a guard in every
  thread, the reports): ``python -m safe_ops.guard``.

Costs: each op pays the Python dispatch of the mode (a few microseconds); each saved tensor one record (about
5 us on a CPU core). Compiled regions (torch.compile) run without the mode (they are not checked); the guard
says so once. Not supported inside: ``torch.func.grad``/``vjp``/``jacrev`` (PyTorch refuses them while any
saved_tensors_hooks are active).
"""
from __future__ import annotations

import sys
import types
from typing import Any, Callable, Optional, Union

from ..errors import InplaceHazardError, InplaceHazardWarning
from ._api import MODES, Guard, GuardStats, live_records
from ._hooks import hooks_are_only_guards
from ._messages import Hazard, SavedValue, Site

__all__ = ["Guard", "GuardStats", "Hazard", "SavedValue", "Site", "InplaceHazardError", "InplaceHazardWarning",
           "MODES", "hooks_are_only_guards", "live_records"]


class _GuardModule(types.ModuleType):
    """``safe_ops.guard`` is this package and, called, the ``Guard`` constructor: ``with safe_ops.guard():``,
    ``safe_ops.guard("copy")``, ``@safe_ops.guard("warn")`` and the bare ``@safe_ops.guard``."""

    def __call__(self, mode: Union[str, Callable[..., Any]] = "raise", *,
                 on_hazard: Optional[Callable[[Hazard], None]] = None) -> Any:
        if callable(mode):  # the bare decorator, `@safe_ops.guard`
            return Guard(on_hazard=on_hazard)(mode)
        return Guard(mode, on_hazard=on_hazard)


sys.modules[__name__].__class__ = _GuardModule
