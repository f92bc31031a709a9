"""The public class: ``safe_ops.guard(mode)`` returns a ``Guard``, a context manager and a decorator."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from ..errors import InplaceHazardWarning
from . import _notices
from . import _records as rec
from ._messages import Hazard
from ._state import current, state
from ._torch import is_compiling

MODES = ("raise", "warn", "copy")
F = TypeVar("F", bound=Callable[..., Any])
_stats_lock = threading.Lock()  # decorated calls finish in any thread


@dataclass
class GuardStats:
    """What one guard saw. ``saved``: tensors recorded as saved for backward; ``hazards``: writes into saved
    memory; ``copies`` / ``bytes``: saved values copied before a write (``mode="copy"``)."""

    saved: int = 0
    hazards: int = 0
    copies: int = 0
    bytes: int = 0

    def add(self, other: "GuardStats") -> None:
        self.saved += other.saved
        self.hazards += other.hazards
        self.copies += other.copies
        self.bytes += other.bytes


def live_records() -> int:
    """How many saved tensors the guards are tracking now, in all threads (they go with their graphs)."""
    return rec.live_count()


class Guard:
    """Catch in-place writes into memory that autograd saved for backward, at the line that writes.

    Use it around the forward pass; backward may run outside it::

        with safe_ops.guard(mode="raise"):
            loss = model(x)
        loss.backward()

    or on a function: ``@safe_ops.guard("warn")`` runs each call under a fresh guard of that mode (its
    ``stats`` add up over the calls; a recursive call runs under the outer call's guard).

    ``mode="raise"``: the writing op raises :class:`safe_ops.InplaceHazardError` (nothing is written). The
    message names the op and the source line that writes, the saved tensor (shape, dtype), the autograd node
    that saved it with the line where it ran, and the fixes.
    ``mode="warn"``: the same report as an :class:`InplaceHazardWarning`, once per source line (per process);
    the write happens, and a backward that reads the overwritten value then raises InplaceHazardError naming
    that line, instead of computing wrong gradients (PyTorch stays silent for writes through ``.data``, under
    saved_tensors_hooks, and for ``_foreach_*_`` ops while a dispatch mode is active).
    ``mode="copy"``: copy-on-write: the saved value is cloned just before the first write into it, and backward
    reads the clone, so gradients are those of the out-of-place program; nothing is copied when nothing is
    written. ``guard.stats`` counts the copies and their bytes.
    ``on_hazard``: called with a :class:`Hazard` (the report as data) at each hazard, in any mode, before the
    guard acts on it (``python -m safe_ops.guard`` builds its reports from it).

    Writes are found through any alias of the saved memory (views, ``.data``, ``.detach()``, other dtypes) and
    only where they touch the saved bytes. Records are released with their graph. State is per thread: a guard
    checks the ops its thread runs, against tensors saved by any thread's guard. Guards nest; the innermost
    decides the mode. A backward run inside a guard runs without its dispatch mode (at the cost of the forward
    alone); a write it makes into a saved value fails when that value is unpacked. Saved for backward: nothing
    beyond what autograd saves (the records alias it; in copy mode, the copies). Code compiled by torch.compile
    is not checked.
    """

    InplaceHazardWarning = InplaceHazardWarning
    GuardStats = GuardStats

    def __init__(self, mode: str = "raise", *, on_hazard: Optional[Callable[[Hazard], None]] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"safe_ops.guard: mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        self.mode = mode
        self.on_hazard = on_hazard
        self.stats = GuardStats()
        self._entered_in: Any = None
        self._calls = threading.local()  # decorator: depth of guarded calls on each thread

    def __enter__(self) -> "Guard":
        if self._entered_in is not None:
            raise RuntimeError("safe_ops.guard: this guard is already active; create a new one to nest")
        if is_compiling():
            _notices.say_compiled()
            return self
        th = state()
        th.stack.append(self)
        self._entered_in = th
        if len(th.stack) == 1:
            try:
                th.install()
            except BaseException:
                th.stack.pop()
                self._entered_in = None
                raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        th = self._entered_in
        if th is None:
            return
        if th is not current() or not th.stack or th.stack[-1] is not self:
            raise RuntimeError(
                "safe_ops.guard: guards must be exited in the thread that entered them, innermost first"
            )
        th.stack.pop()
        self._entered_in = None
        if not th.stack:
            th.uninstall()

    def __call__(self, fn: F) -> F:
        """Decorator form: each call of ``fn`` runs under a new guard of this mode (guards cannot be re-entered,
        and calls may come from several threads); its counts are added to ``self.stats``."""
        if not callable(fn):
            raise TypeError(f"safe_ops.guard(...) decorates a function, got {type(fn).__name__}")

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._calls, "depth", 0)
            if depth:  # a recursive call: already under this decorator's guard
                return fn(*args, **kwargs)
            inner = Guard(self.mode, on_hazard=self.on_hazard)
            self._calls.depth = 1
            try:
                with inner:
                    return fn(*args, **kwargs)
            finally:
                self._calls.depth = 0
                with _stats_lock:
                    self.stats.add(inner.stats)

        return guarded  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"safe_ops.guard(mode={self.mode!r}, stats={self.stats})"

    @staticmethod
    def live_records() -> int:
        """How many saved tensors the guards are tracking now, in all threads (they go with their graphs)."""
        return rec.live_count()
