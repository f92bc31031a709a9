"""Messages the guard gives once: the warn-mode warning per source line, and the note that compiled regions
are not checked (per process)."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Set, Tuple

from ..errors import InplaceHazardWarning
from ._messages import Site

warned_lines: Set[Optional[Tuple[str, int]]] = set()
said_compiled = False
COMPILED_NOTICE = (
    "safe_ops.guard: torch.compile'd regions are not checked. Writes made inside compiled code are invisible "
    "to the guard; tensors a compiled region saves for backward are still tracked, and writes into them outside "
    "compiled code are still caught."
)


def reset() -> None:
    """Forget what was said (for tests)."""
    global said_compiled
    warned_lines.clear()
    said_compiled = False


def warn_once_per_line(message: str, site: Optional[Site]) -> None:
    line = (site.filename, site.lineno) if site is not None else None
    if line in warned_lines:
        return
    warned_lines.add(line)
    if site is not None:
        warnings.warn_explicit(message, InplaceHazardWarning, site.filename, site.lineno)
    else:
        warnings.warn(message, InplaceHazardWarning, stacklevel=2)


def say_compiled(th: Any = None, stacklevel: int = 3) -> None:
    """Say it once per process: when the guard exits (a warning raised inside compiled code's runtime can be
    swallowed by torch's own warning capture), or now if no guard is active on ``th`` (a ThreadState)."""
    global said_compiled
    if said_compiled:
        return
    if th is not None and th.stack:
        th.saw_compiled = True
        return
    said_compiled = True
    warnings.warn(COMPILED_NOTICE, UserWarning, stacklevel=stacklevel)
