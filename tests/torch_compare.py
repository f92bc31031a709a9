"""Calling safe_ops and torch on the same arguments and comparing how each ended (tests/test_opinfo.py,
tests/test_fuzz.py)."""
from typing import Callable, Optional

import torch

HALF = (torch.float16, torch.bfloat16)


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


def _ordered_bits(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 bit patterns as integers ordered like the values (+0 and -0 both 0)."""
    bits = t.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    mag = bits & 0x7FFF
    return torch.where(bits >= 0x8000, -mag, mag)


def _max_diff(actual: torch.Tensor, expected: torch.Tensor) -> str:
    if actual.numel() == 0:
        return ""
    a, e = actual.detach(), expected.detach()
    if a.dtype.is_complex:
        a, e = torch.view_as_real(a.resolve_conj()), torch.view_as_real(e.resolve_conj())
    if a.dtype == torch.bool:
        a, e = a.int(), e.int()
    a, e = a.to(torch.float64), e.to(torch.float64)
    d = torch.where((a == e) | (torch.isnan(a) & torch.isnan(e)), 0, (a - e).abs()).nan_to_num(nan=float("inf"))
    i = int(d.reshape(-1).argmax())
    n_bad = int((d != 0).sum())
    return f"max |diff| {float(d.reshape(-1)[i]):.6g} at flat {i} ({n_bad}/{d.numel()} differ)"


def mismatch(actual, expected: torch.Tensor, ulps: int = 0, zero_sign_free: bool = False) -> Optional[str]:
    """Bitwise comparison (NaN == NaN at the same places, signed zeros distinguished unless `zero_sign_free`) of
    dtype, shape and values; `ulps` > 0 allows that many units in the last place (float16/bfloat16 only)."""
    if not isinstance(actual, torch.Tensor):
        return f"returned {type(actual).__name__}, torch a Tensor"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype}, torch {expected.dtype}"
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)}, torch {tuple(expected.shape)}"
    if actual.device != expected.device:
        return f"device {actual.device}, torch {expected.device}"
    a, e = actual.detach().resolve_conj().resolve_neg(), expected.detach().resolve_conj().resolve_neg()
    if ulps and a.dtype in HALF:
        nan_a, nan_e = torch.isnan(a), torch.isnan(e)
        if not torch.equal(nan_a, nan_e):
            return "NaN at different places; " + _max_diff(a, e)
        dist = (_ordered_bits(a) - _ordered_bits(e)).abs().masked_fill(nan_a, 0)
        worst = int(dist.max()) if dist.numel() else 0
        return None if worst <= ulps else f"{worst} ulp apart (allowed {ulps}); " + _max_diff(a, e)
    try:
        torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True)
    except AssertionError:
        return "values differ: " + _max_diff(a, e)
    if not zero_sign_free and (a.is_floating_point() or a.is_complex()):
        ra = torch.view_as_real(a) if a.is_complex() else a
        re = torch.view_as_real(e) if e.is_complex() else e
        zeros = (ra == 0) & (re == 0)
        if not torch.equal(torch.signbit(ra) & zeros, torch.signbit(re) & zeros):
            return "signed zeros differ"
    return None
