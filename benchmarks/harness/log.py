"""Progress lines: what a benchmark run is doing, one flushed line at a time."""
from __future__ import annotations

import time

_T0 = time.perf_counter()


def progress(msg: str) -> None:
    """Print one progress line, prefixed by the seconds since the harness was imported."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)
