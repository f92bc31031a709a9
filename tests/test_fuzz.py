"""Property-based fuzzing against torch (issue 11): safe_ops.<op> and safe_ops.<op>_ give torch's bits, dtype and
shape, or raise torch's exception type, over random shapes (0-4 dims, sizes 0-70, vector tails), broadcasting,
strides (transposed, sliced, storage offsets, expanded stride-0 operands), float dtypes (occasionally mixed),
scalars and aliased operands.

FUZZ_EXAMPLES (default 200) examples per test, ten tests: `make test` runs 2,000 cases (seconds), `make fuzz` 20,000.
Derandomized (the same cases every run) unless FUZZ_DERANDOMIZE=0.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_compare import call, exception_mismatch, mismatch

import safe_ops

from op_table import FLOAT_DTYPES as FLOATS  # the kernels' dtypes
from op_table import ops_with

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
DERANDOMIZE = os.environ.get("FUZZ_DERANDOMIZE", "1") != "0"
# Sizes that end a dimension on, just before and just after a vector width (8/16/32/64 lanes) and its tail.
TAIL_SIZES = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70)
SCALARS = (0, 1, -1, 2, -3, 0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -3.125, 3.14, 1e-3, -1e4, True)
# The ops with fuzz recipes (their rows' `fuzz`: the operands after the first, the in-place target, and how
# numbers enter the call).
FUZZ_OPS = {info.name: info.fuzz for info in ops_with("fuzz")}
CASES_RUN: Dict[str, int] = {}


# ---------------------------------------------------------------------------------------------------------------
# A case is a recipe: `build()` makes fresh tensors from it (twice for in-place: torch's and safe_ops' targets,
# aliasing included).


@dataclasses.dataclass(frozen=True)
class Operand:
    shape: Tuple[int, ...]
    dtype: torch.dtype
    layout: str  # contiguous | transposed | sliced | offset | expanded
    seed: int
    specials: bool  # some elements inf, -inf, nan, -0.0, 0.0 or huge
    expanded_dims: Tuple[int, ...] = ()  # layout "expanded": the dims of size 1 in memory, stride 0

    def __repr__(self):
        extra = f"{list(self.expanded_dims)}" if self.layout == "expanded" else ""
        return (f"T{self.shape}:{str(self.dtype)[6:]}:{self.layout}{extra}:seed={self.seed}"
                + (":specials" if self.specials else ""))


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    operands: Tuple[object, ...]  # Operand or a Python number, the op's positional tensor arguments in order
    kwargs: Tuple[Tuple[str, object], ...]
    alias: str  # none | same (operand 1 is operand 0) | overlap (operands 0 and 1 are overlapping views)

    def __repr__(self):
        kw = "".join(f", {k}={v!r}" for k, v in self.kwargs)
        alias = "" if self.alias == "none" else f" alias={self.alias}"
        return f"{self.op}({', '.join(map(repr, self.operands))}{kw}){alias}"


def _values(n: int, dtype: torch.dtype, seed: int, specials: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = (1.0, 1e-3, 300.0)[seed % 3]
    x = torch.randn(n, generator=g, dtype=torch.float64) * scale
    if specials and n:
        special = torch.tensor([float("inf"), -float("inf"), float("nan"), -0.0, 0.0, 6e4, -1e38], dtype=torch.float64)
        where = torch.randint(0, n, (max(1, n // 8),), generator=g)
        x[where] = special[torch.randint(0, len(special), (len(where),), generator=g)]
    return x.to(dtype)


def _make(o: Operand) -> torch.Tensor:
    shape = o.shape
    n = 1
    for s in shape:
        n *= s
    if o.layout == "transposed" and len(shape) >= 2:
        return _values(n, o.dtype, o.seed, o.specials).reshape(shape[::-1]).permute(*range(len(shape) - 1, -1, -1))
    if o.layout == "sliced" and shape:
        wide = shape[:-1] + (2 * shape[-1],)
        return _values(2 * n, o.dtype, o.seed, o.specials).reshape(wide)[..., ::2]
    if o.layout == "offset":
        k = 1 + o.seed % 3
        return _values(n + k, o.dtype, o.seed, o.specials)[k:].view(shape)
    if o.layout == "expanded" and o.expanded_dims:
        small = tuple(1 if d in o.expanded_dims else s for d, s in enumerate(shape))
        m = 1
        for s in small:
            m *= s
        return _values(m, o.dtype, o.seed, o.specials).reshape(small).expand(shape)
    return _values(n, o.dtype, o.seed, o.specials).reshape(shape)


def build(case: Case):
    """(positional arguments, kwargs) of the op, fresh tensors."""
    args = [_make(o) if isinstance(o, Operand) else o for o in case.operands]
    if case.alias == "same":
        args[1] = args[0]
    elif case.alias == "overlap":
        o = case.operands[0]
        n = args[0].numel()
        k = 1 + o.seed % max(1, n)
        base = _values(n + k, o.dtype, o.seed, o.specials)
        args[0], args[1] = base[:n].view(o.shape), base[k:].view(o.shape)
    return args, dict(case.kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Strategies


@st.composite
def shapes(draw) -> Tuple[int, ...]:
    ndim = draw(st.integers(0, 4))
    inner = st.one_of(st.integers(0, 70), st.sampled_from(TAIL_SIZES))
    outer = st.integers(0, 9) if ndim <= 2 else st.integers(0, 5)
    return tuple(draw(outer) for _ in range(ndim - 1)) + ((draw(inner),) if ndim else ())


@st.composite
def broadcast_shape(draw, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """A shape that broadcasts to `shape`: leading dims dropped, some dims 1."""
    if not draw(st.integers(0, 2)):  # a third of operands keep the full shape
        return shape
    drop = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else s for s in shape[drop:])


@st.composite
def operands(draw, shape: Tuple[int, ...], dtype: torch.dtype) -> Operand:
    if draw(st.integers(0, 9)) == 0:  # occasionally another dtype than the rest
        dtype = draw(st.sampled_from(FLOATS))
    layout = draw(st.sampled_from(("contiguous", "contiguous", "transposed", "sliced", "offset", "expanded")))
    expanded = ()
    if layout == "expanded":
        dims = [d for d, s in enumerate(shape) if s != 1]
        expanded = tuple(d for d in dims if draw(st.booleans())) or tuple(dims[:1])
    return Operand(shape, dtype, layout, draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 4)) == 0, expanded)


def scalars():
    return st.one_of(st.sampled_from(SCALARS), st.integers(-5, 5),
                     st.floats(-100, 100, allow_nan=False, allow_infinity=False))


@st.composite
def cases(draw, op: str, inplace: bool) -> Case:
    shape = draw(shapes())
    dtype = draw(st.sampled_from(FLOATS))
    # The in-place target has the result's shape (now and then not: torch raises there, safe_ops must too).
    first_shape = shape if inplace and draw(st.integers(0, 9)) else draw(broadcast_shape(shape))
    first = draw(operands(first_shape, dtype))
    fuzz = FUZZ_OPS[op]
    rest: List[object] = []
    for _ in fuzz.operands:
        if fuzz.number_operands and draw(st.integers(0, 6)) == 0:
            rest.append(draw(scalars()))  # op(t, 2.5): a Python number operand
        else:
            rest.append(draw(operands(draw(broadcast_shape(shape)), dtype)))
    kwargs: Tuple[Tuple[str, object], ...] = ()
    if fuzz.weight:  # a trailing weight: a number (its special values) or a tensor
        if draw(st.booleans()):
            rest.append(draw(st.one_of(st.sampled_from((0, 1, 0.0, 1.0, 0.5, -0.5, 1.5, 0.25)),
                                       st.floats(-1, 2, allow_nan=False))))
        else:
            rest.append(draw(operands(draw(broadcast_shape(shape)), dtype)))
    elif draw(st.integers(0, 3)):  # a quarter use the default alpha/value
        kwargs = ((fuzz.scalar_kw, draw(scalars())),)
    alias = "none"
    if isinstance(rest[0], Operand):
        alias = draw(st.sampled_from(("none",) * 8 + ("same", "overlap")))
        if alias == "overlap" and rest[0].dtype != first.dtype:
            alias = "none"
        if alias != "none":  # operand 1 takes operand 0's shape and dtype
            rest[0] = dataclasses.replace(first, seed=first.seed + 1)
    return Case(op, (first, *rest), kwargs, alias)


# ---------------------------------------------------------------------------------------------------------------
# Checks


def allowed_ulps(case: Case) -> int:
    """Bit for bit everywhere (an alpha != 1 in half precision runs torch's own kernel)."""
    return 0


def zero_sign_is_free(case: Case, args) -> bool:
    """Where the row says torch's zero signs are not a contract for these arguments (the one known difference,
    README: "What still differs")."""
    return FUZZ_OPS[case.op].zero_sign_is_free(args)


def check_functional(case: Case) -> Optional[str]:
    args, kwargs = build(case)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    expected, torch_exc = call(getattr(torch, case.op), *args, **kwargs)
    actual, exc = call(getattr(safe_ops, case.op), *args, **kwargs)
    bad = exception_mismatch(torch_exc, exc)
    if bad is None and expected is not None:
        bad = mismatch(actual, expected, allowed_ulps(case), zero_sign_is_free(case, args))
    for i, (a, b) in enumerate(zip(args, before)):
        if bad is None and isinstance(a, torch.Tensor) and mismatch(a, b) is not None:
            bad = f"operand {i} modified"
    return bad


def check_inplace(case: Case) -> Optional[str]:
    torch_args, kwargs = build(case)
    our_args, _ = build(case)
    with torch.no_grad():
        expected, torch_exc = call(getattr(torch.Tensor, case.op + "_"), *torch_args, **kwargs)
        actual, exc = call(getattr(safe_ops, case.op + "_"), *our_args, **kwargs)
    bad = exception_mismatch(torch_exc, exc)
    if bad is not None or torch_exc is not None:
        return bad
    free = zero_sign_is_free(case, our_args)
    bad = mismatch(actual, expected, allowed_ulps(case), free)
    if bad is not None:
        return "result: " + bad
    if actual is not our_args[0]:
        return "did not write into its target under no_grad (returned a new tensor)"
    for i, (ours, theirs) in enumerate(zip(our_args, torch_args)):  # the target, and operands that alias it
        if isinstance(ours, torch.Tensor):
            bad = mismatch(ours, theirs, allowed_ulps(case), free)
            if bad is not None:
                return f"operand {i} after the write: " + bad
    return None


# ---------------------------------------------------------------------------------------------------------------
# Tests

FUZZ = settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TESTS = [(op, inplace) for op in FUZZ_OPS for inplace in (False, True)]


def _fuzz_id(op: str, inplace: bool) -> str:
    return op + ("_" if inplace else "")


def _run(op: str, inplace: bool) -> int:
    """Runs the fuzz test of one op (raises at the first case that differs from torch); the number of cases."""
    check = check_inplace if inplace else check_functional
    count = 0

    @FUZZ
    @given(case=cases(op, inplace))
    def run(case):
        nonlocal count
        count += 1
        problem = check(case)
        assert problem is None, f"{case!r}: {problem}"

    run()
    return count


@pytest.mark.parametrize("op, inplace", TESTS, ids=[_fuzz_id(*t) for t in TESTS])
def test_fuzz(op, inplace):
    CASES_RUN[_fuzz_id(op, inplace)] = _run(op, inplace)


def test_case_count():
    """Every fuzz test above passed in this process, after FUZZ_EXAMPLES cases each."""
    missing = {_fuzz_id(*t) for t in TESTS} - set(CASES_RUN)
    if missing:
        pytest.skip(f"fuzz tests {sorted(missing)} failed or did not run in this process")
    total = sum(CASES_RUN.values())
    print(f"\nfuzz: {total} cases ({CASES_RUN})")
    assert total >= len(TESTS) * EXAMPLES, f"only {total} cases ran ({CASES_RUN})"
