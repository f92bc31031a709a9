"""The dispatch mode: sees every aten op below autograd, checks those that write an argument."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch.utils._python_dispatch import TorchDispatchMode

from ._records import _live
from ._torch import get_ident
from ._writes import SPECS, bump_foreach_versions, write_spec

if TYPE_CHECKING:
    from ._state import ThreadState

_UNKNOWN = object()
_spec_of = SPECS.get


class GuardMode(TorchDispatchMode):
    """Checks every op that writes a tensor argument against the live records (one dict lookup for an op,
    nothing more for ops that write nothing); keeps the bookkeeping that names the node which saved each
    tensor (``ThreadState.attribute``)."""

    def __init__(self, th: "ThreadState") -> None:
        super().__init__()
        self.th = th

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        # Let torch.compile compile (and run compiled code unobserved) inside a guard instead of silently
        # falling back to eager; the guard says once that compiled regions are not checked.
        return True

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        th = self.th
        if kwargs is None:
            kwargs = {}
        own = get_ident() == th.ident
        if own:
            if th.busy:
                return func(*args, **kwargs)
            if th.touched:
                th.accept_versions()
            if th.awaiting:
                th.resolve()
            if th.pending:
                th.bind(func)
        spec = _spec_of(func, _UNKNOWN)
        if spec is _UNKNOWN:
            spec = write_spec(func)
        if spec is not None and _live:
            touched = th.check(func, spec, args, kwargs)
            if touched:
                th.touched.extend(touched)  # (from an autograd worker thread too: the owner accepts them)
        out = func(*args, **kwargs)
        if spec is not None and spec.foreach:
            bump_foreach_versions(spec, args, kwargs)
        if own:
            th.last = out
        return out
