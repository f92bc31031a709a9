"""One run of ``python -m safe_ops.guard``: a guard in every thread the program starts, the hazards they report,
and what is said at the first hazard and at exit (on stderr, and as JSON with ``--json``)."""
from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from ..errors import InplaceHazardError
from ._api import Guard, GuardStats
from ._messages import FIX, Hazard, Site, is_internal_file

CLI_MODES = ("raise", "report", "copy")
# Frames users are not shown: runpy's (it runs the program) and threading's (it runs the program's threads).
_RUNNERS = (os.path.abspath(runpy.__file__), os.path.abspath(threading.__file__))


@dataclass
class Entry:
    """A distinct hazard (same write line, op and savers) and how often it happened."""

    hazard: Hazard
    count: int = 1


def _n(count: int, singular: str, plural: str = "") -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _bytes(n: int) -> str:
    return _n(n, "byte") if n < 1 << 20 else f"{n} bytes ({n / (1 << 20):.1f} MiB)"


def write_traceback(path: Callable[[str], str]) -> List[str]:
    """The user's frames of the current stack, as traceback lines (torch's, safe_ops', runpy's and threading's
    left out), files shown as ``path`` says."""
    frames = [f for f in traceback.extract_stack(sys._getframe(1))
              if f.filename not in _RUNNERS and not is_internal_file(f.filename)]
    for f in frames:
        f.filename = path(f.filename)
    return traceback.format_list(frames)


class Session:
    """``mode``: "raise" (stop at the first hazard), "report" (copy on write, report each distinct hazard once
    and all of them at exit) or "copy" (copy on write, say at exit how much was copied)."""

    def __init__(self, mode: str, command: List[str], json_path: Optional[str] = None,
                 stream: Optional[TextIO] = None, cwd: Optional[str] = None) -> None:
        if mode not in CLI_MODES:
            raise ValueError(f"mode must be one of {CLI_MODES}, got {mode!r}")
        self.mode = mode
        self.command = command
        self.json_path = json_path
        self.stream = stream if stream is not None else sys.stderr
        self.cwd = cwd  # files under it are shown relative to it
        self.entries: Dict[Tuple[Any, ...], Entry] = {}
        self.stopped: Optional[Hazard] = None  # raise mode: the hazard reported, which stops the program
        self._stopped_by: Optional[Hazard] = None  # the same, as the raised InplaceHazardError carries it
        self.exit_code: Optional[int] = None
        self._totals = GuardStats()
        self._active: List[Guard] = []
        self._lock = threading.RLock()
        self._finished = False
        self._original_start: Any = None
        self._original_excepthook: Any = None

    # -- guards --

    def new_guard(self) -> Guard:
        g = Guard("raise" if self.mode == "raise" else "copy", on_hazard=self.on_hazard)
        with self._lock:
            self._active.append(g)
        return g

    def release(self, g: Guard) -> None:
        with self._lock:
            if g in self._active:
                self._active.remove(g)
                self._totals.add(g.stats)

    def stats(self) -> GuardStats:
        with self._lock:
            total = GuardStats(**asdict(self._totals))
            for g in self._active:
                total.add(g.stats)
        return total

    def install_in_threads(self) -> None:
        """Run every thread started from now on (``threading.Thread`` and its subclasses, thread pools) under
        a guard of its own, reporting here. Threads started with ``_thread`` directly are not guarded."""
        session = self
        original_start = self._original_start = threading.Thread.start
        self._original_excepthook = threading.excepthook

        def start(thread: threading.Thread) -> None:
            run = thread.run

            def run_guarded() -> None:
                g = session.new_guard()
                try:
                    with g:
                        run()
                finally:
                    session.release(g)

            thread.run = run_guarded  # type: ignore[method-assign]
            original_start(thread)

        threading.Thread.start = start  # type: ignore[method-assign]
        threading.excepthook = self._excepthook

    def uninstall_from_threads(self) -> None:
        if self._original_start is not None:
            threading.Thread.start = self._original_start  # type: ignore[method-assign]
            threading.excepthook = self._original_excepthook
            self._original_start = None

    def _excepthook(self, args: Any) -> None:
        if self.is_reported(args.exc_value):
            # Raise mode stops the program at the first hazard, whichever thread it is in: the report is out.
            self.exit_code = 1
            self.finish()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - a closed stream must not keep the process alive
                    pass
            os._exit(1)
        self._original_excepthook(args)

    def is_reported(self, error: Optional[BaseException]) -> bool:
        """Whether ``error`` is the InplaceHazardError of the hazard raise mode reported."""
        return (isinstance(error, InplaceHazardError) and self.stopped is not None
                and getattr(error, "hazard", None) is self._stopped_by)

    # -- hazards --

    def on_hazard(self, raised: Hazard) -> None:
        h = self._shown(raised)
        with self._lock:
            entry = self.entries.get(h.key)
            if entry is not None:
                entry.count += 1
                return
            self.entries[h.key] = Entry(h)
            number = len(self.entries)
            first = self.stopped is None and self.mode == "raise"
            if first:
                self.stopped, self._stopped_by = h, raised
        if first:
            lines = ["Traceback of the write (most recent call last; torch's and safe_ops' frames left out):\n"]
            self._say("".join(lines + write_traceback(self._path)) + self._message(h) + "\n")
        elif self.mode == "report":
            head = f"safe_ops.guard: unsafe in-place write #{number} (copied on write; the run goes on)"
            self._say("\n".join([head + ":", h.write_line(), *h.saved_lines(), *self._thread(h)]) + "\n")

    def _path(self, filename: str) -> str:
        if self.cwd is not None and filename.startswith(self.cwd + os.sep):
            return os.path.relpath(filename, self.cwd)
        return filename

    def _shown(self, h: Hazard) -> Hazard:
        """``h`` with its files shown relative to the working directory (as the command named the script)."""
        def site(s: Optional[Site]) -> Optional[Site]:
            return s._replace(filename=self._path(s.filename)) if s is not None else None

        saved = tuple(replace(v, site=site(v.site)) for v in h.saved)
        return replace(h, site=site(h.site), saved=saved)

    @staticmethod
    def _thread(h: Hazard) -> List[str]:
        return [] if h.thread == "MainThread" else [f"  thread: {h.thread}"]

    def _message(self, h: Hazard) -> str:
        lines = h.message().split("\n")
        return "\n".join(lines[:2] + self._thread(h) + lines[2:])

    def _say(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a closed stderr must not turn a report into a crash
            pass

    # -- at exit --

    def summary(self) -> str:
        stats = self.stats()
        checked = f"checked {_n(stats.saved, 'tensor')} saved for backward"
        entries = list(self.entries.values())
        if self.mode == "raise":
            if self.stopped is None:
                return f"safe_ops.guard: no unsafe in-place write ({checked}).\n"
            return ("safe_ops.guard: stopped at the first unsafe in-place write (exit 1). `--mode report` runs "
                    "to the end, copying on write, and lists every one.\n")
        if self.mode == "copy":
            return (f"safe_ops.guard: copy mode: copied {_n(stats.copies, 'saved tensor')} ({_bytes(stats.bytes)}) "
                    f"before in-place writes at {_n(len(entries), 'place')}; {checked}.\n")
        if not entries:
            return f"safe_ops.guard: no unsafe in-place write ({checked}).\n"
        total = sum(e.count for e in entries)
        lines = [f"safe_ops.guard: {_n(total, 'unsafe in-place write')} at {_n(len(entries), 'place')}, each "
                 f"copied on write ({_n(stats.copies, 'copy', 'copies')}, {_bytes(stats.bytes)}), so the gradients "
                 f"are those of the out-of-place program; {checked}:"]
        for e in entries:
            h = e.hazard
            savers = ", ".join(f"{s.node} at {s.site}" for s in h.saved[:3])
            times = "once" if e.count == 1 else f"{e.count} times"
            thread = "" if h.thread == "MainThread" else f", thread {h.thread}"
            where = h.site if h.site is not None else "an unknown line"
            lines.append(f"  {where}: {h.op} into what {savers} saved ({times}{thread})")
        lines.append(FIX)
        return "\n".join(lines) + "\n"

    def to_json(self) -> Dict[str, Any]:
        return {
            "tool": "safe_ops.guard",
            "mode": self.mode,
            "command": self.command,
            "exit_code": self.exit_code,
            "stats": asdict(self.stats()),
            "hazards": [dict(e.hazard.to_dict(), count=e.count) for e in self.entries.values()],
            "fix": FIX,
        }

    def finish(self) -> None:
        """Say the summary and write the JSON, once (at interpreter exit, after the program's threads)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self.uninstall_from_threads()
        self._say(self.summary())
        if self.json_path is not None:
            try:
                with open(self.json_path, "w") as f:
                    json.dump(self.to_json(), f, indent=2)
                    f.write("\n")
            except OSError as error:
                self._say(f"safe_ops.guard: cannot write {self.json_path}: {error}\n")
