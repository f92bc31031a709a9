"""Per-thread guard state: the guards entered on the thread, the hooks and mode they installed, the pack side
(records and the node that saved each tensor) and the write side (check, report, copy)."""
from __future__ import annotations

import sys
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from torch import Tensor

from ..errors import InplaceHazardError
from . import _hooks, _notices
from . import _records as rec
from ._backward import patch_backward
from ._cow import copy_saved
from ._extent import Extent, elements_overlap, extent
from ._messages import Hazard, user_site
from ._mode import GuardMode
from ._packed import tensors_in
from ._records import COMPOSED, INDEPENDENT, OPAQUE, PLAIN, Saved
from ._torch import alias, get_ident, is_compiling, sequence_nr
from ._writes import WriteSpec, written_tensors

if TYPE_CHECKING:
    from ._api import Guard

# Pack hooks whose result holds no alias of the tensor because backward recomputes it (non-reentrant
# activation checkpointing: a `_Holder`). Writes into the original are then harmless. Other results that hold
# no visible tensor (a key into some store) are assumed to alias it.
_RECOMPUTING_HOOK_MODULES = frozenset({"torch.utils.checkpoint"})

_tls = threading.local()


def state() -> "ThreadState":
    """This thread's state, created on first use."""
    th = getattr(_tls, "state", None)
    if th is None:
        th = _tls.state = ThreadState()
    return th


def current() -> Optional["ThreadState"]:
    return getattr(_tls, "state", None)


def _first_tensor(out: Any) -> Optional[Tensor]:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor):
                return item
    return None


def _unpack_plain(obj: Any) -> Any:
    return obj.unpack() if type(obj) is Saved else obj


def _accept_versions(touched: List[Tuple[Saved, int]]) -> None:
    """A write the guard checked and found outside a record's bytes still bumps the version counter it shares
    with the record (views of one base share one): accept the new version, so backward does not fail where the
    saved values are intact. Autograd bumps it after the op returns from the mode, so this runs at the thread's
    next op, pack or guard exit."""
    for r, before in touched:
        t = r.t
        if t is not None and r.version == before and t._version != before:
            r.version = t._version


class ThreadState:
    def __init__(self) -> None:
        self.ident = get_ident()
        self.stack: List["Guard"] = []
        self.mode: Optional[GuardMode] = None
        self.hooks_pushed = False
        self.busy = 0
        self.pending: List[Saved] = []  # saved before their op reached the mode (inputs of built-in ops)
        self.awaiting: List[Saved] = []  # op known; node attached to its output once autograd returns
        self.last: Any = None  # output of the last op this thread dispatched
        self.touched: List[Tuple[Saved, int]] = []  # records next to a checked write: see _accept_versions
        self.saw_compiled = False

    def accept_versions(self) -> None:
        touched, self.touched = self.touched, []
        _accept_versions(touched)

    # -- install / uninstall (outermost guard of the thread) --

    def install(self) -> None:
        self.pending, self.awaiting, self.last, self.busy, self.touched = [], [], None, 0, []
        self.mode = GuardMode(self)
        self.mode.__enter__()
        try:
            top = _hooks.top_hooks()
            if top is not None:
                pack, unpack = self.compose(*top)
            else:
                pack, unpack = self.pack_plain, _unpack_plain
            _hooks.push(pack, unpack)
            self.hooks_pushed = True
            _hooks.set_thread_hooks(pack if top is None else None, self.compose)
        except RuntimeError as error:  # saved_tensors_hooks disabled here (e.g. by a functorch transform)
            self.hooks_pushed = False
            warnings.warn(f"safe_ops.guard: cannot record saved tensors here ({error}); nothing is checked.",
                          stacklevel=3)
        _hooks.patch_push(+1)
        patch_backward(+1)

    def uninstall(self) -> None:
        try:
            self.accept_versions()
            if self.awaiting:
                self.resolve()
        finally:
            self.pending, self.awaiting, self.last, self.touched = [], [], None, []
            if self.saw_compiled:
                self.saw_compiled = False
                _notices.say_compiled(stacklevel=5)  # the user's `with` line
            _hooks.patch_push(-1)
            patch_backward(-1)
            if self.hooks_pushed:
                self.hooks_pushed = False
                _hooks.clear_thread_hooks()
                _hooks.pop()
            mode, self.mode = self.mode, None
            if mode is not None:
                mode.__exit__(None, None, None)

    # -- pack side --

    def pack_plain(self, t: Tensor) -> Any:
        return self.pack(t, None, None)

    def compose(self, pack_hook: Callable, unpack_hook: Callable) -> Tuple[Callable, Callable]:
        def pack(t: Tensor) -> Any:
            return self.pack(t, pack_hook, unpack_hook)

        def unpack(obj: Any) -> Any:
            return obj.unpack() if type(obj) is Saved else unpack_hook(obj)

        return pack, unpack

    def pack(self, t: Tensor, pack_hook: Optional[Callable], unpack_hook: Optional[Callable]) -> Any:
        if not self.stack or is_compiling():
            return t if pack_hook is None else pack_hook(t)
        own = get_ident() == self.ident
        if own and self.touched:
            self.accept_versions()
        self.busy += own
        try:
            seq = sequence_nr() - 1 if sequence_nr is not None else None
            ext = extent(t)
            if pack_hook is None:
                r = rec.new_record(PLAIN, t)
                r.t = alias(t)
                r.version = t._version
            else:
                packed = pack_hook(t)
                kind, found_alias = PLAIN, None
                if ext is None or type(packed).__module__ in _RECOMPUTING_HOOK_MODULES:
                    kind = INDEPENDENT
                else:
                    found = tensors_in(packed)
                    for x in found:
                        e = extent(x)
                        if e is not None and e.key == ext.key:
                            found_alias = x
                            break
                    kind = COMPOSED if found_alias is not None else (INDEPENDENT if found else OPAQUE)
                r = rec.new_record(kind, t)
                r.packed = packed
                r.unpack_hook = unpack_hook
                if kind == COMPOSED:
                    r.t = found_alias
                    r.version = found_alias._version
                elif kind == OPAQUE:
                    r.tref = weakref.ref(t)
                else:
                    ext = None
            r.seq = seq
            r.site = user_site(sys._getframe(1))
            if own:
                self.attribute(r, t, seq)
            if ext is not None:
                rec.register(r, ext)
            for g in self.stack:
                g.stats.saved += 1
            return r
        finally:
            self.busy -= own

    def attribute(self, r: Saved, t: Tensor, seq: Optional[int]) -> None:
        """Name the node that saves ``t`` now if autograd has attached it to an output already (outputs being
        saved; every save of a custom Function), else at the op's next dispatch. The pack hook reads
        autograd's sequence number: the node under construction is the newest one on the thread."""
        if self.awaiting:
            self.resolve()
        if seq is None:  # no sequence numbers to tell this node from older ones: wait for the next op
            self.pending.append(r)
            return
        for candidate in (t, _first_tensor(self.last)):
            g = candidate.grad_fn if candidate is not None else None
            if g is not None and g._sequence_nr() == seq:
                r.node = g.name()
                if "CompiledFunction" in r.node:
                    _notices.say_compiled(self)
                return
        self.pending.append(r)

    def bind(self, func: Any) -> None:
        op = str(func)
        for r in self.pending:
            r.op = op
        self.awaiting += self.pending
        self.pending = []

    def resolve(self) -> None:
        waiting, self.awaiting = self.awaiting, []
        out = _first_tensor(self.last)
        self.busy += 1
        try:
            g = out.grad_fn if out is not None else None
        finally:
            self.busy -= 1
        seq, name = (g._sequence_nr(), g.name()) if g is not None else (None, None)
        if name is not None and "CompiledFunction" in name:
            _notices.say_compiled(self)
        for r in waiting:
            if name is not None and (r.seq is None or r.seq == seq):
                r.node = name
            elif r.seq is not None and r.tries < 4:
                # The op that ran was a helper of the autograd kernel that saves (like the clone of `self` an
                # in-place op saves before writing it): the node comes with a later op; sequence numbers match
                # exactly, so trying the next few ops cannot misname it.
                r.tries += 1
                self.pending.append(r)

    # -- write side --

    def check(self, func: Any, spec: WriteSpec, args: tuple, kwargs: dict) -> List[Tuple[Saved, int]]:
        touched: List[Tuple[Saved, int]] = []
        for t in written_tensors(spec, args, kwargs):
            ext = extent(t)
            if ext is None or ext.key not in rec._live:
                continue
            records = rec.records_on(ext.key)
            hits = []
            if not spec.metadata_only:
                device = t.device
                hits = [r for r in records if r.device == device and elements_overlap(ext, r.ext)]
            if hits:
                self.hazard(func, t, ext, hits)
            touched += [(r, r.t._version) for r in records if r.t is not None and r not in hits]
        return touched

    def hazard(self, func: Any, t: Tensor, ext: Extent, hits: List[Saved]) -> None:
        # Records still awaiting their node were bound to this very op (the dispatch resolved older ones):
        # it saved an operand and now writes over it, as `a.mul_(a)` does.
        self_write = get_ident() == self.ident and any(r in self.awaiting for r in hits)
        stack = self.stack
        mode = stack[-1].mode if stack else "raise"
        for g in stack:
            g.stats.hazards += 1
        listeners = list(dict.fromkeys(g.on_hazard for g in stack if g.on_hazard is not None))
        report: Optional[Hazard] = None
        if mode != "copy" or listeners:
            report = Hazard.of(func, user_site(sys._getframe(1)), t, ext, hits, self_write)
            for listener in listeners:
                listener(report)
        if mode == "copy":
            copies, nbytes = copy_saved(hits, t)
            for g in stack:
                g.stats.copies += copies
                g.stats.bytes += nbytes
            return
        assert report is not None
        if mode == "raise":
            error = InplaceHazardError(report.message())
            error.hazard = report  # type: ignore[attr-defined]  # for tools: the structured report
            raise error
        for r in hits:
            r.warned = report.site
        _notices.warn_once_per_line(report.message(), report.site)
