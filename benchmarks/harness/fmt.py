"""Human-readable times and byte counts, for the progress lines and the results table."""
from __future__ import annotations

from typing import Optional


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    if b < 0:
        return "err"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(b) >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{int(b)} B"

