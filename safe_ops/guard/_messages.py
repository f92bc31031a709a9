"""What the guard says: the user's source line of an op, and the reports of a hazard (as an exception or
warning message, and as a ``Hazard`` value for tools)."""
from __future__ import annotations

import linecache
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._extent import Extent

if TYPE_CHECKING:
    from ._records import Saved


class Site(NamedTuple):
    """A source location: the user's frame, not torch's or safe_ops' own."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def code(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def describe(self) -> str:
        text = self.code()
        return f"{self} (in {self.function}: `{text}`)" if text else f"{self} (in {self.function})"

    def to_dict(self) -> Dict[str, Any]:
        return {"file": self.filename, "line": self.lineno, "function": self.function, "code": self.code()}


# torch's and safe_ops' own directories (this file is safe_ops/guard/_messages.py).
INTERNAL_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (torch.__file__, os.path.dirname(os.path.abspath(__file__)))
)
_internal_code: Dict[Any, bool] = {}


def is_internal_file(name: str) -> bool:
    """Whether a source file belongs to torch, safe_ops (its generated wrappers too) or a frozen module."""
    return name.startswith(INTERNAL_DIRS) or name.startswith(("<frozen", "<safe_ops generated"))


def is_internal(code: Any) -> bool:
    """``is_internal_file`` of a code object's file, cached per code object (it runs on every saved tensor)."""
    internal = _internal_code.get(code)
    if internal is None:
        if len(_internal_code) > 50_000:
            _internal_code.clear()
        internal = _internal_code[code] = is_internal_file(code.co_filename)
    return internal


def user_site(frame: Any) -> Optional[Site]:
    """The first frame, from ``frame`` outwards, whose code is not in torch or safe_ops."""
    while frame is not None:
        code = frame.f_code
        if not is_internal(code):
            return Site(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


FIX = (
    "Fix: write out of place (`y = y * 2` instead of `y.mul_(2)`), use safe_ops' in-place-when-safe ops "
    "(`y = safe_ops.add_(y, x)`, which copy when a write would be unsafe), `.clone()` the tensor before "
    "writing into it, or run the forward under `safe_ops.guard(mode=\"copy\")` to copy saved values on write."
)
WHY = (
    "The backward of that node reads the saved value: after this write it would compute wrong gradients "
    "(PyTorch reports it only when backward runs, and never for writes through `.data` or while "
    "saved_tensors_hooks are active)."
)


def _shape(shape: Tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def node_of(r: "Saved") -> str:
    if r.node is not None:
        return r.node
    if r.op is not None:
        return f"the backward node of {r.op}"
    return "an autograd node"


@dataclass(frozen=True)
class SavedValue:
    """One saved tensor a write went into: the node that saved it, the line that ran that op, its shape and
    dtype, and whether the write covers only part of it."""

    node: str
    site: Optional[Site]
    shape: Tuple[int, ...]
    dtype: str
    partial: bool = False

    @classmethod
    def of(cls, r: "Saved", written: Optional[Extent] = None) -> "SavedValue":
        partial = written is not None and r.ext is not None and (written.lo > r.ext.lo or written.hi < r.ext.hi)
        return cls(node_of(r), r.site, tuple(r.shape), _dtype(r.dtype), partial)

    def describe(self) -> str:
        where = self.site.describe() if self.site is not None else "an unknown line"
        text = f"a {self.dtype} tensor of shape {_shape(self.shape)} that {self.node} saved for backward at {where}"
        return text + " (the write covers part of it)" if self.partial else text

    def to_dict(self) -> Dict[str, Any]:
        return {"node": self.node, "site": self.site.to_dict() if self.site is not None else None,
                "shape": list(self.shape), "dtype": self.dtype, "partial": self.partial}


@dataclass(frozen=True)
class Hazard:
    """An in-place write into memory autograd saved for backward: the op (``mul_``, overload
    ``aten.mul_.Tensor``), the user's line that ran it, the written tensor's shape and dtype, the saved values it
    went into, whether the op saved its own operand (``a.mul_(a)``) and the thread's name."""

    op: str
    overload: str
    site: Optional[Site]
    shape: Tuple[int, ...]
    dtype: str
    saved: Tuple[SavedValue, ...]
    self_write: bool = False
    thread: str = "MainThread"

    @classmethod
    def of(cls, func: Any, site: Optional[Site], written: Tensor, ext: Extent, hits: List["Saved"],
           self_write: bool) -> "Hazard":
        packet = getattr(func, "overloadpacket", None)
        short = getattr(packet, "__name__", None)
        return cls(short or str(func), str(func), site, tuple(written.shape), _dtype(written.dtype),
                   tuple(SavedValue.of(r, ext) for r in hits), self_write, threading.current_thread().name)

    @property
    def key(self) -> Tuple[Any, ...]:
        """Equal for the same write line, op and savers: what "the same hazard" means in a report."""
        where = (self.site.filename, self.site.lineno) if self.site is not None else None
        savers = tuple((s.node, (s.site.filename, s.site.lineno) if s.site is not None else None) for s in self.saved)
        return where, self.overload, savers

    def write_line(self) -> str:
        op = f"{self.op} ({self.overload})" if self.op != self.overload else self.overload
        where = self.site.describe() if self.site is not None else "an unknown line"
        return f"  write: {op} into a {self.dtype} tensor of shape {_shape(self.shape)} at {where}"

    def saved_lines(self) -> List[str]:
        lines = [f"  saved: {s.describe()}" for s in self.saved[:3]]
        if len(self.saved) > 3:
            lines.append(f"  ... and {len(self.saved) - 3} more saved tensors on the same memory")
        if self.self_write:
            lines.append("  The op saves its own operand and then writes its output over it.")
        return lines

    def message(self) -> str:
        lines = ["safe_ops.guard: in-place write into memory that autograd saved for backward.", self.write_line()]
        return "\n".join(lines + self.saved_lines() + ["  " + WHY, "  " + FIX])

    def to_dict(self) -> Dict[str, Any]:
        return {"op": self.op, "overload": self.overload, "site": self.site.to_dict() if self.site else None,
                "shape": list(self.shape), "dtype": self.dtype, "saved": [s.to_dict() for s in self.saved],
                "self_write": self.self_write, "thread": self.thread}


def stale_message(r: "Saved") -> str:
    """Backward found a saved value overwritten: after a warn-mode guard let the write happen, or where no
    guard saw it (PyTorch's version check, which the guard's hooks turn off, repeated)."""
    saved = SavedValue.of(r).describe()
    if r.warned is not None:
        return (
            f"safe_ops.guard: one of the variables needed for gradient computation was overwritten in place at "
            f"{r.warned} (reported there by the guard's warning): {saved}. Backward would compute "
            f"wrong gradients from it. " + FIX
        )
    return (
        f"safe_ops.guard: one of the variables needed for gradient computation has been modified by an inplace "
        f"operation: {saved} is at version {r.t._version}; expected version {r.version}. The guard "
        f"did not see the write: it happened outside `safe_ops.guard` (after the `with` block or in another "
        f"thread) or inside a torch.compile'd region. " + FIX
    )
