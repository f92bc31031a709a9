"""Calling safe_ops and torch on the same arguments and comparing how each ended (tests/test_opinfo.py,
tests/test_fuzz.py)."""
from typing import Callable, Optional


def call(fn: Callable, *args, **kwargs):
    """(result, None) or (None, exception)."""
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001  (the type is what is compared)
        return None, e


def _first_line(e: BaseException, n: int) -> str:
    text = str(e)
    return text.splitlines()[0][:n] if text else ""


def exception_mismatch(torch_exc: Optional[BaseException], ours: Optional[BaseException]) -> Optional[str]:
    """None when both succeeded or both raised (ours an instance of torch's type), else what differs."""
    if torch_exc is None and ours is None:
        return None
    if torch_exc is None:
        return f"raised {type(ours).__name__}: {_first_line(ours, 160)} (torch returned)"
    if ours is None:
        return f"returned, torch raised {type(torch_exc).__name__}: {_first_line(torch_exc, 120)}"
    if not isinstance(ours, type(torch_exc)):
        return (f"raised {type(ours).__name__} ({_first_line(ours, 100)}), torch {type(torch_exc).__name__} "
                f"({_first_line(torch_exc, 80)})")
    return None
