"""safe_ops.guard(): find in-place writes into values autograd saved for backward, at the line that writes.

PyTorch notices such a write only when backward reads the saved value (and points at the op whose backward
failed), and never notices it for writes through ``.data`` or while ``saved_tensors_hooks`` are active.

Design
------
- A ``saved_tensors_hooks`` pack hook records every tensor saved for backward while a guard is active: which
  storage it aliases and the byte range it covers, shape and dtype, the user's source line, and the autograd
  node that saved it. The record *is* the object the pack hook returns, so the ``SavedVariable`` in the graph
  owns it: when the graph is freed (after backward, or when its outputs die) the record dies and leaves the
  registry (a dict keyed by storage address). The record keeps a detached alias of the tensor, which shares
  its version counter, and the unpack hook repeats PyTorch's version check, so a write the guard could not see
  (made after the ``with`` block) still fails at backward instead of passing silently.
- A ``TorchDispatchMode`` sees every aten op below autograd. For ops whose schema writes an argument
  (``Tensor(a!)``: ``add_``, ``copy_``, ``index_put_``, ``out=`` ...), it looks the written tensor's storage up
  in the registry (one dict lookup; nothing else for ops that write nothing) and tests the byte ranges, exactly
  (element by element) for strided views.
- On a hit: ``raise`` raises ``InplaceHazardError`` from inside the op, so the traceback ends at the writing
  line and nothing is written; ``warn`` warns once per source line, lets the write happen and marks the record,
  so a backward that reads it fails instead of computing wrong gradients; ``copy`` clones the saved value just
  before the write (one clone of the bytes several saved views share) and the unpack hook hands the clone to
  backward.
- The node that saved a tensor: the pack hook reads autograd's sequence number (the node under construction is
  the newest one on the thread); the node object is found from the saving op's output once autograd has
  attached it, at the next op or pack.
- Hooks the user pushes inside the guard (``saved_tensors_hooks``, ``save_on_cpu``, checkpointing) and hooks
  already active when it is entered are composed with the guard's: the user's pack hook runs first and the
  guard tracks whatever in its result still aliases the saved memory (nothing for checkpointing, which
  recomputes; a result with no visible tensor is assumed to alias it).
- Writes that change metadata only (``t_``, ``resize_``, ``set_`` ...) are not hazards: records keep their own
  alias. A checked write outside a record's bytes that still bumps its shared version counter is accepted.
  While any dispatch mode is active PyTorch's ``_foreach_*_`` ops skip version bumps on tensors that require
  grad: the mode bumps them, so graphs built outside the guard keep PyTorch's own check.

Costs: each op pays the Python dispatch of the mode (a few microseconds); each saved tensor one record (about
5 us on a CPU core). Compiled regions (torch.compile) run without the mode (they are not checked); the guard
says so once. Not supported inside: ``torch.func.grad``/``vjp``/``jacrev`` (PyTorch refuses them while any
saved_tensors_hooks are active).
"""
from __future__ import annotations

import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from . import _guard_records as rec
from ._guard_records import COMPOSED, HI, INDEPENDENT, KEY, LO, OPAQUE, PLAIN, SHAPE, SIZE, STRIDE, _Saved
from .errors import InplaceHazardError, InplaceHazardWarning

__all__ = ["guard", "GuardStats", "InplaceHazardWarning"]

_MODES = ("raise", "warn", "copy")


@dataclass
class GuardStats:
    """What one guard saw. ``saved``: tensors recorded as saved for backward; ``hazards``: writes into saved
    memory; ``copies`` / ``bytes``: saved values copied before a write (``mode="copy"``)."""

    saved: int = 0
    hazards: int = 0
    copies: int = 0
    bytes: int = 0


# ---- torch entry points (private ones guarded by fallbacks) -------------------------------------------------

_autograd_c = torch._C._autograd
_PUSH = _autograd_c._push_saved_tensors_default_hooks
_POP = _autograd_c._pop_saved_tensors_default_hooks
_sequence_nr: Optional[Callable[[], int]] = getattr(torch.autograd, "_get_sequence_nr", None) or getattr(
    _autograd_c, "_get_sequence_nr", None
)
_is_compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
get_ident = threading.get_ident


_DisableTorchDispatch = getattr(torch._C, "_DisableTorchDispatch", None)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def _alias(t: Tensor) -> Tensor:
    """``t.detach()``: same memory and version counter, no autograd history (no reference cycle through the
    node that saves an output). For plain tensors, skip the Python dispatch (the guard's own mode) on the way."""
    if _DisableTorchDispatch is not None and type(t) in _PLAIN_TYPES:
        with _DisableTorchDispatch():
            return t.detach()
    return t.detach()


# Pack hooks whose result holds no alias of the tensor because backward recomputes it (non-reentrant
# activation checkpointing: a `_Holder`). Writes into the original are then harmless. Other results that hold
# no visible tensor (a key into some store) are assumed to alias it.
_RECOMPUTING_HOOK_MODULES = frozenset({"torch.utils.checkpoint"})


def _top_hooks() -> Optional[Tuple[Callable, Callable]]:
    """The saved_tensors_hooks active now, if torch can tell (absent before 2.1: then None)."""
    top = getattr(_autograd_c, "_top_saved_tensors_default_hooks", None)
    if top is None:
        return None
    try:
        return top(False)
    except TypeError:
        return top()


def _first_tensor(out: Any) -> Optional[Tensor]:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor):
                return item
    return None


# ---- which ops write ----------------------------------------------------------------------------------------

# In-place ops that change a tensor's metadata (shape, strides, storage pointer) and not the bytes of its
# memory. The guard's records hold their own alias, which these ops leave untouched.
_METADATA_OPS = frozenset({
    "detach_", "t_", "transpose_", "squeeze_", "unsqueeze_", "as_strided_", "swapaxes_", "swapdims_",
    "resize_", "resize_as_", "set_", "_coalesced_", "sparse_resize_", "sparse_resize_and_clear_",
    "resize_as_sparse_", "_resize_output_",
})
# op -> (((arg index, arg name, keyword-only), ...), metadata only, a _foreach_ op); () when it writes nothing.
_WRITES: Dict[Any, Any] = {}


def _write_spec(func: Any) -> Any:
    spec: Any = ()
    schema = getattr(func, "_schema", None)
    if schema is not None:
        writes = tuple(
            (i, a.name, a.kwarg_only)
            for i, a in enumerate(schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        if writes:
            name = schema.name.split("::")[-1]
            spec = (writes, name in _METADATA_OPS, name.startswith("_foreach_"))
    _WRITES[func] = spec
    return spec


_increment_version = getattr(torch.autograd.graph, "increment_version", None)


def _bump_foreach_versions(writes: Any, args: tuple, kwargs: dict) -> None:
    """While any TorchDispatchMode is active, PyTorch's ``_foreach_*_`` ops leave the version counters of
    tensors that require grad unchanged, so PyTorch's own check would miss writes into tensors saved outside
    the guard. Bump them (bumping twice, where torch does too, is harmless)."""
    if _increment_version is None:
        return
    for index, name, kwarg_only in writes:
        value = kwargs.get(name) if kwarg_only or index >= len(args) else args[index]
        for t in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(t, Tensor) and t.requires_grad and not t.is_inference():
                _increment_version(t)


# ---- once-only messages -------------------------------------------------------------------------------------

_warned_lines: set = set()
_said_compiled = False
_COMPILED_NOTICE = (
    "safe_ops.guard: torch.compile'd regions are not checked. Writes made inside compiled code are invisible "
    "to the guard; tensors a compiled region saves for backward are still tracked, and writes into them outside "
    "compiled code are still caught."
)


def _say_compiled(th: Optional["_ThreadState"] = None, stacklevel: int = 3) -> None:
    """Say it once per process: when the guard exits (a warning raised inside compiled code's runtime can be
    swallowed by torch's own warning capture), or now if no guard is active."""
    global _said_compiled
    if _said_compiled:
        return
    if th is not None and th.stack:
        th.saw_compiled = True
        return
    _said_compiled = True
    warnings.warn(_COMPILED_NOTICE, UserWarning, stacklevel=stacklevel)


# ---- the push_saved_tensors_default_hooks patch: compose user hooks pushed inside a guard -------------------

_tls = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0


def _push_composed(pack_hook: Callable, unpack_hook: Callable) -> None:
    th = getattr(_tls, "state", None)
    if th is not None and th.stack and th.hooks_pushed:
        pack_hook, unpack_hook = th.compose(pack_hook, unpack_hook)
    _PUSH(pack_hook, unpack_hook)


def _patch_push(delta: int) -> None:
    global _patch_users
    with _patch_lock:
        _patch_users += delta
        try:
            _autograd_c._push_saved_tensors_default_hooks = _push_composed if _patch_users else _PUSH
        except (AttributeError, TypeError):  # a torch whose module refuses: hooks pushed inside stay uncomposed
            pass


# ---- per-thread state ---------------------------------------------------------------------------------------


class _Mode(TorchDispatchMode):
    """Checks every op that writes a tensor argument against the live records; keeps the bookkeeping that
    names the node which saved each tensor."""

    def __init__(self, th: "_ThreadState") -> None:
        super().__init__()
        self.th = th

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        # Let torch.compile compile (and run compiled code unobserved) inside a guard instead of silently
        # falling back to eager; the guard says once that compiled regions are not checked.
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
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
        spec = _WRITES.get(func)
        if spec is None:
            spec = _write_spec(func)
        if spec and rec._live:
            touched = th.check(func, spec, args, kwargs)
            if touched:
                th.touched.extend(touched)  # (from an autograd worker thread too: the owner accepts them)
        out = func(*args, **kwargs)
        if spec and spec[2]:
            _bump_foreach_versions(spec[0], args, kwargs)
        if own:
            th.last = out
        return out


def _accept_versions(touched: List[Tuple[_Saved, int]]) -> None:
    """A write the guard checked and found outside a record's bytes still bumps the version counter it shares
    with the record (views of one base share one): accept the new version, so backward does not fail where the
    saved values are intact. Autograd bumps it after the op returns from the mode, so this runs at the thread's
    next op, pack or guard exit."""
    for r, before in touched:
        t = r.t
        if t is not None and r.version == before and t._version != before:
            r.version = t._version


class _ThreadState:
    def __init__(self) -> None:
        self.ident = get_ident()
        self.stack: List["guard"] = []
        self.mode: Optional[_Mode] = None
        self.hooks_pushed = False
        self.busy = 0
        self.pending: List[_Saved] = []  # saved before their op reached the mode (inputs of built-in ops)
        self.awaiting: List[_Saved] = []  # op known; node attached to its output once autograd returns
        self.last: Any = None  # output of the last op this thread dispatched
        self.touched: List[Tuple[_Saved, int]] = []  # records next to a checked write: see _accept_versions
        self.saw_compiled = False

    def accept_versions(self) -> None:
        touched, self.touched = self.touched, []
        _accept_versions(touched)

    # -- install / uninstall (outermost guard of the thread) --

    def install(self) -> None:
        self.pending, self.awaiting, self.last, self.busy, self.touched = [], [], None, 0, []
        self.mode = _Mode(self)
        self.mode.__enter__()
        try:
            top = _top_hooks()
            if top is not None:
                pack, unpack = self.compose(*top)
            else:
                pack, unpack = self.pack_plain, _unpack_plain
            _PUSH(pack, unpack)
            self.hooks_pushed = True
        except RuntimeError as error:  # saved_tensors_hooks disabled here (e.g. by a functorch transform)
            self.hooks_pushed = False
            warnings.warn(f"safe_ops.guard: cannot record saved tensors here ({error}); nothing is checked.")
        _patch_push(+1)

    def uninstall(self) -> None:
        try:
            self.accept_versions()
            if self.awaiting:
                self.resolve()
        finally:
            self.pending, self.awaiting, self.last, self.touched = [], [], None, []
            if self.saw_compiled:
                self.saw_compiled = False
                _say_compiled(stacklevel=5)  # the user's `with` line
            _patch_push(-1)
            if self.hooks_pushed:
                self.hooks_pushed = False
                _POP()
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
            return obj.unpack() if type(obj) is _Saved else unpack_hook(obj)

        return pack, unpack

    def pack(self, t: Tensor, pack_hook: Optional[Callable], unpack_hook: Optional[Callable]) -> Any:
        if not self.stack or _is_compiling():
            return t if pack_hook is None else pack_hook(t)
        own = get_ident() == self.ident
        if own and self.touched:
            self.accept_versions()
        self.busy += own
        try:
            seq = _sequence_nr() - 1 if _sequence_nr is not None else None
            ext = rec.extent(t)
            if pack_hook is None:
                r = rec.new_record(PLAIN, t)
                r.t = _alias(t)
                r.version = t._version
            else:
                packed = pack_hook(t)
                kind, alias = PLAIN, None
                if ext is None or type(packed).__module__ in _RECOMPUTING_HOOK_MODULES:
                    kind = INDEPENDENT
                else:
                    found = rec.tensors_in(packed)
                    for x in found:
                        e = rec.extent(x)
                        if e is not None and e[KEY] == ext[KEY]:
                            alias = x
                            break
                    kind = COMPOSED if alias is not None else (INDEPENDENT if found else OPAQUE)
                r = rec.new_record(kind, t)
                r.packed = packed
                r.unpack_hook = unpack_hook
                if kind == COMPOSED:
                    r.t = alias
                    r.version = alias._version
                elif kind == OPAQUE:
                    r.tref = weakref.ref(t)
                else:
                    ext = None
            r.seq = seq
            r.site = rec.user_site(sys._getframe(1))
            if own:
                self.attribute(r, t, seq)
            if ext is not None:
                rec.register(r, ext)
            for g in self.stack:
                g.stats.saved += 1
            return r
        finally:
            self.busy -= own

    def attribute(self, r: _Saved, t: Tensor, seq: Optional[int]) -> None:
        """Name the node that saves ``t`` now if autograd has attached it to an output already (outputs being
        saved; every save of a custom Function), else at the op's next dispatch."""
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
                    _say_compiled(self)
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
            _say_compiled(self)
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

    def check(self, func: Any, spec: Any, args: tuple, kwargs: dict) -> List[Tuple[_Saved, int]]:
        writes, metadata_only, _ = spec
        touched: List[Tuple[_Saved, int]] = []
        for index, name, kwarg_only in writes:
            value = kwargs.get(name) if kwarg_only or index >= len(args) else args[index]
            if value is None:
                continue
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if not isinstance(t, Tensor):
                    continue
                ext = rec.extent(t)
                if ext is None or ext[KEY] not in rec._live:
                    continue
                records = rec.records_on(ext[KEY])
                hits = []
                if not metadata_only:
                    device = t.device
                    hits = [r for r in records if r.device == device and rec.elements_overlap(ext, r.ext)]
                if hits:
                    self.hazard(func, t, ext, hits)
                touched += [(r, r.t._version) for r in records if r.t is not None and r not in hits]
        return touched

    def hazard(self, func: Any, t: Tensor, ext: rec.Extent, hits: List[_Saved]) -> None:
        # Records still awaiting their node were bound to this very op (the dispatch resolved older ones):
        # it saved an operand and now writes over it, as `a.mul_(a)` does.
        self_write = get_ident() == self.ident and any(r in self.awaiting for r in hits)
        stack = self.stack if self.stack else []
        mode = stack[-1].mode if stack else "raise"
        for g in stack:
            g.stats.hazards += 1
        if mode == "copy":
            copies, nbytes = _copy(hits, t)
            for g in stack:
                g.stats.copies += copies
                g.stats.bytes += nbytes
            return
        site = rec.user_site(sys._getframe(1))
        message = rec.hazard_message(_op_name(func), site, t, ext, hits, self_write)
        if mode == "raise":
            raise InplaceHazardError(message)
        for r in hits:
            r.warned = site
        line = (site.filename, site.lineno) if site is not None else None
        if line not in _warned_lines:
            _warned_lines.add(line)
            if site is not None:
                warnings.warn_explicit(message, InplaceHazardWarning, site.filename, site.lineno)
            else:
                warnings.warn(message, InplaceHazardWarning)


def _op_name(func: Any) -> str:
    packet = getattr(func, "overloadpacket", None)
    short = getattr(packet, "__name__", None)
    return f"{short} ({func})" if short else str(func)


def _copy(hits: List[_Saved], written: Tensor) -> Tuple[int, int]:
    """Copy the saved values the write is about to overwrite: one clone per distinct saved view, or one clone
    of the bytes they span when that is smaller (``a @ a.t()`` saves ``a`` and its transpose: one copy)."""
    memo: Dict[Any, Tensor] = {}
    made = [0, 0]
    views = [r for r in hits if r.kind != COMPOSED]
    if len(views) > 1:
        lo = min(r.ext[LO] for r in views)
        hi = max(r.ext[HI] for r in views)
        distinct = {(r.ext[LO], r.ext[SHAPE], r.ext[STRIDE], r.dtype): rec.nbytes(r.ext) for r in views}
        if hi - lo < sum(distinct.values()) and all((r.ext[LO] - lo) % r.ext[SIZE] == 0 for r in views):
            span = torch.empty(0, dtype=torch.uint8, device=written.device)
            buffer = span.set_(written.untyped_storage(), lo, (hi - lo,), (1,)).clone()
            made[0], made[1] = 1, hi - lo
            for r in views:
                view = torch.empty(0, dtype=r.dtype, device=written.device)
                e = r.ext
                r.copy = view.set_(buffer.untyped_storage(), (e[LO] - lo) // e[SIZE], e[SHAPE], e[STRIDE])
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
            r.packed = rec.replace_aliases(r.packed, r.ext[KEY], clone)
            r.copy = True
        else:
            r.copy = clone(r.saved_tensor(written))
        r.t = None
        rec.unregister(r)
    return made[0], made[1]


def _unpack_plain(obj: Any) -> Any:
    return obj.unpack() if type(obj) is _Saved else obj


def _state() -> _ThreadState:
    th = getattr(_tls, "state", None)
    if th is None:
        th = _tls.state = _ThreadState()
    return th


def hooks_are_only_guards() -> bool:
    """Whether the saved_tensors_hooks active on this thread are a guard's own, composed with no user hook.

    For safe_ops' in-place-when-safe decision, which copies whenever hooks are active because a hook may hold a
    tensor where reference counts cannot see it: a guard's record holds a detached alias of each saved tensor,
    which does raise its storage's use count, so under the guard alone that rule is not needed.
    """
    th = getattr(_tls, "state", None)
    if th is None or not th.stack or not th.hooks_pushed:
        return False
    top = _top_hooks()
    return top is not None and top[0] == th.pack_plain


# ---- public API ---------------------------------------------------------------------------------------------


class guard:
    """Catch in-place writes into memory that autograd saved for backward, at the line that writes.

    Use it around the forward pass; backward may run outside it::

        with safe_ops.guard(mode="raise"):
            loss = model(x)
        loss.backward()

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

    Writes are found through any alias of the saved memory (views, ``.data``, ``.detach()``, other dtypes) and
    only where they touch the saved bytes. Records are released with their graph. State is per thread: a guard
    checks the ops its thread runs, against tensors saved by any thread's guard. Guards nest; the innermost
    decides the mode. Saved for backward: nothing beyond what autograd saves (the records alias it; in copy
    mode, the copies). Code compiled by torch.compile is not checked.
    """

    InplaceHazardWarning = InplaceHazardWarning
    GuardStats = GuardStats

    def __init__(self, mode: str = "raise") -> None:
        if mode not in _MODES:
            raise ValueError(f"safe_ops.guard: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
        self.mode = mode
        self.stats = GuardStats()
        self._entered_in: Optional[_ThreadState] = None

    def __enter__(self) -> "guard":
        if self._entered_in is not None:
            raise RuntimeError("safe_ops.guard: this guard is already active; create a new one to nest")
        if _is_compiling():
            _say_compiled()
            return self
        th = _state()
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
        if th is not getattr(_tls, "state", None) or not th.stack or th.stack[-1] is not self:
            raise RuntimeError(
                "safe_ops.guard: guards must be exited in the thread that entered them, innermost first"
            )
        th.stack.pop()
        self._entered_in = None
        if not th.stack:
            th.uninstall()

    def __repr__(self) -> str:
        return f"safe_ops.guard(mode={self.mode!r}, stats={self.stats})"

    @staticmethod
    def live_records() -> int:
        """How many saved tensors the guards are tracking now, in all threads (they go with their graphs)."""
        return rec.live_count()
