"""Drop-in parity with torch on PyTorch's own OpInfo samples (issue 11).

For the op_db entries of every op of the table that mirrors a torch op (tests/op_table/), every CPU dtype torch
supports, and every sample of ``sample_inputs``, ``reference_inputs`` and ``error_inputs``: ``safe_ops.<name>``
gives torch's values (bitwise), dtype and shape, or raises torch's exception type; ``safe_ops.<name>_`` does what
``torch.Tensor.<name>_`` does on a clone (raises where it raises; where it writes, writes the same values into the
target under no_grad and returns the target); float64/complex128 gradients match torch's. Each test checks every
sample of its (entry, dtype, kind) and reports all mismatches at once; ``test_sample_count`` fails if far fewer
samples were checked than measured.
"""
from __future__ import annotations

import collections
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.opinfo.core import ErrorInput, SampleInput
from torch_compare import call, exception_mismatch, mismatch

import safe_ops

from op_table import OP_TABLE

ROWS = {info.name: info for info in OP_TABLE if info.mirrors_torch}
NAMES = tuple(ROWS)
DEVICE = "cpu"
ENTRIES = [op for op in op_db if op.name in NAMES]
GRAD_DTYPES = (torch.float64, torch.complex128)
# Measured on torch 2.14.1 with every test of this module run: 9,779 samples. The bound catches a sample
# generator (or a filter here) that silently stops producing most of them.
MIN_SAMPLES = 9000
SAMPLE_COUNTS: Dict[str, int] = {}


def entry_id(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtypes(op) -> List[torch.dtype]:
    return sorted(op.supported_dtypes(DEVICE), key=str)


# ---------------------------------------------------------------------------------------------------------------
# Comparison: None when equal, else a one-line description of the difference.


def allowed_ulps(name: str, dtype: torch.dtype, sample: SampleInput) -> int:
    """Bit for bit everywhere (an alpha != 1 in half precision runs torch's own kernel)."""
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Samples


def _tensors(sample: SampleInput) -> List[torch.Tensor]:
    values = [sample.input, *sample.args, *sample.kwargs.values()]
    return [v for v in values if isinstance(v, torch.Tensor)]


def _snapshot(sample: SampleInput) -> List[torch.Tensor]:
    return [t.detach().clone() for t in _tensors(sample)]


def _unchanged(sample: SampleInput, before: List[torch.Tensor]) -> Optional[str]:
    for i, (t, b) in enumerate(zip(_tensors(sample), before)):
        if mismatch(t.detach(), b) is not None:
            return f"operand {i} was modified"
    return None


def _desc_value(v) -> str:
    if isinstance(v, torch.Tensor):
        return (f"T{tuple(v.shape)}:{dtype_id(v.dtype)}" + ("" if v.is_contiguous() else f" stride={v.stride()}")
                + (f" off={v.storage_offset()}" if v.storage_offset() else ""))
    return repr(v)


def describe(sample: SampleInput) -> str:
    args = ", ".join(_desc_value(a) for a in (sample.input, *sample.args))
    kwargs = "".join(f", {k}={_desc_value(v)}" for k, v in sample.kwargs.items())
    return f"({args}{kwargs})"


def _same_layout_clone(t):
    """A copy of `t` with its strides (clone() makes non-dense tensors contiguous); clone() where they overlap."""
    if not isinstance(t, torch.Tensor):
        return t
    try:
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
        out.copy_(t.detach())
        return out
    except RuntimeError:
        return t.detach().clone()


# ---------------------------------------------------------------------------------------------------------------
# Checks of one sample: a list of problems (empty when it matches torch).


def check_functional(op, dtype, sample: SampleInput) -> List[str]:
    ours_fn = getattr(safe_ops, op.name)
    before = _snapshot(sample)
    expected, torch_exc = call(op.op, sample.input, *sample.args, **sample.kwargs)
    actual, exc = call(ours_fn, sample.input, *sample.args, **sample.kwargs)
    problems = []
    bad = exception_mismatch(torch_exc, exc)
    if bad:
        problems.append(bad)
    elif expected is not None:
        bad = mismatch(actual, expected, allowed_ulps(op.name, dtype, sample))
        if bad:
            problems.append(bad)
    bad = _unchanged(sample, before)
    if bad:
        problems.append("functional op: " + bad)
    return problems


def check_inplace(op, dtype, sample: SampleInput) -> List[str]:
    name = op.name
    problems = []
    torch_target = _same_layout_clone(sample.input)
    our_target = _same_layout_clone(sample.input)
    with torch.no_grad():
        expected, torch_exc = call(getattr(torch.Tensor, name + "_"), torch_target, *sample.args, **sample.kwargs)
        actual, exc = call(getattr(safe_ops, name + "_"), our_target, *sample.args, **sample.kwargs)
    bad = exception_mismatch(torch_exc, exc)
    if bad:
        return [bad]
    if torch_exc is not None:
        return []
    bad = mismatch(actual, expected, allowed_ulps(name, dtype, sample))
    if bad:
        problems.append("result: " + bad)
    if actual is not our_target:
        problems.append("did not write into its target under no_grad (returned a new tensor)")
    else:
        bad = mismatch(our_target, torch_target, allowed_ulps(name, dtype, sample))
        if bad:
            problems.append("target: " + bad)
    return problems


def _real_loss(out: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cotangent = torch.randn(out.shape, dtype=out.dtype, generator=g)
    return (out * cotangent).real.sum() if out.is_complex() else (out * cotangent).sum()


def _grads(fn, sample: SampleInput, seed: int):
    leaves = []
    for t in _tensors(sample):
        if t.requires_grad and all(t is not leaf for leaf in leaves):
            leaves.append(t)
    out = fn(sample.input, *sample.args, **sample.kwargs)
    if not leaves or not out.requires_grad:
        return out, [None] * len(leaves)
    return out, torch.autograd.grad(_real_loss(out, seed), leaves, allow_unused=True)


def check_grad(op, dtype, sample: SampleInput, seed: int) -> List[str]:
    expected, torch_exc = call(_grads, op.op, sample, seed)
    actual, exc = call(_grads, getattr(safe_ops, op.name), sample, seed)
    bad = exception_mismatch(torch_exc, exc)
    if bad:
        return [bad]
    if torch_exc is not None:
        return []
    (out, grads), (ref_out, ref_grads) = actual, expected
    problems = []
    if out.requires_grad != ref_out.requires_grad:
        problems.append(f"output requires_grad {out.requires_grad}, torch {ref_out.requires_grad}")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        if (g is None) != (r is None):
            problems.append(f"grad {i} is None: {g is None}, torch's: {r is None}")
        elif g is not None:
            try:
                torch.testing.assert_close(g, r, equal_nan=True)
            except AssertionError as e:
                problems.append(f"grad {i}: " + " ".join(str(e).split())[:200])
    return problems


def check_error(op, ei: ErrorInput) -> List[str]:
    sample = ei.sample_input
    before = _snapshot(sample)
    _, torch_exc = call(op.op, sample.input, *sample.args, **sample.kwargs)
    assert isinstance(torch_exc, ei.error_type), f"torch itself: {torch_exc!r} is not a {ei.error_type}"
    _, exc = call(getattr(safe_ops, op.name), sample.input, *sample.args, **sample.kwargs)
    problems = []
    if not isinstance(exc, ei.error_type):
        problems.append(f"raised {exc!r}, torch a {ei.error_type.__name__}" if exc else "returned, torch raised "
                        f"{type(torch_exc).__name__}")
    bad = _unchanged(sample, before)
    if bad:
        problems.append(bad)
    return problems


# op_db's error_inputs for these entries are empty in torch 2.14; the rows' errors (whose type is what torch raises
# for them) make the error kind check something. Built per call: the tensors are the inputs that must stay unchanged.
def _extra_error_inputs(name: str) -> List[ErrorInput]:
    def t(*shape, dtype=torch.float32):
        return torch.arange(1, 1 + int(torch.Size(shape).numel()), dtype=torch.float64).reshape(shape).to(dtype)

    def err(input, *args, **kwargs):
        sample = SampleInput(input, args=args, kwargs=kwargs)
        _, e = call(getattr(torch, name), input, *args, **kwargs)
        assert e is not None, f"torch.{name}{describe(sample)} does not raise"
        return ErrorInput(sample, error_type=type(e), error_regex="")

    return ROWS[name].opinfo_error_inputs(t, err)


def _error_inputs(op) -> List[ErrorInput]:
    from_db = list(op.error_inputs(DEVICE)) if op.error_inputs_func is not None else []
    return from_db + _extra_error_inputs(op.name)


# ---------------------------------------------------------------------------------------------------------------
# Tests


def _report(test_id: str, n: int, failures: List[Tuple[str, str]]) -> None:
    SAMPLE_COUNTS[test_id] = n
    if failures:
        causes = collections.Counter(problem.split(";")[0].split(" at flat")[0][:110] for _, problem in failures)
        head = "\n  ".join(f"{desc}: {problem}" for desc, problem in failures[:8])
        summary = "\n  ".join(f"{c}x {k}" for k, c in causes.most_common(6))
        pytest.fail(f"{len(failures)} of {n} samples differ from torch:\n  {summary}\nfirst:\n  {head}", pytrace=False)


def _kind_params():
    params = []
    for op in ENTRIES:
        for dtype in _dtypes(op):
            for kind in ("sample", "reference", "inplace"):
                params.append(pytest.param(op, dtype, kind, id=f"{entry_id(op)}-{dtype_id(dtype)}-{kind}"))
            if dtype in GRAD_DTYPES and op.supports_autograd:
                params.append(pytest.param(op, dtype, "grad", id=f"{entry_id(op)}-{dtype_id(dtype)}-grad"))
    return params


KIND_PARAMS = _kind_params()


def _differentiable(t):
    if not isinstance(t, torch.Tensor):
        return t
    return t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex())


@pytest.mark.parametrize("op, dtype, kind", KIND_PARAMS)
def test_parity(op, dtype, kind, request):
    torch.manual_seed(0)
    failures, n = [], 0
    if kind == "grad":
        # reference_inputs mix in integer operands, which cannot require grad: the others do.
        samples = [*op.sample_inputs(DEVICE, dtype, requires_grad=True),
                   *(s.transform(_differentiable) for s in op.reference_inputs(DEVICE, dtype))]
    else:
        samples = []
        if kind in ("sample", "inplace"):
            samples += op.sample_inputs(DEVICE, dtype, requires_grad=False)
        if kind in ("reference", "inplace"):
            samples += op.reference_inputs(DEVICE, dtype, requires_grad=False)
    for i, sample in enumerate(samples):
        if kind == "grad":
            problems = check_grad(op, dtype, sample, seed=i)
        elif kind == "inplace":
            problems = check_inplace(op, dtype, sample)
        else:
            problems = check_functional(op, dtype, sample)
        failures += [(describe(sample), p) for p in problems]
        n += 1
    assert n > 0
    _report(request.node.callspec.id, n, failures)


@pytest.mark.parametrize("op", ENTRIES, ids=entry_id)
def test_error_inputs(op, request):
    failures, n = [], 0
    for ei in _error_inputs(op):
        for check, label in ((check_error, ""), (_check_error_inplace, "in-place: ")):
            failures += [(describe(ei.sample_input), label + p) for p in check(op, ei)]
        n += 1
    _report(f"{entry_id(op)}-error", n, failures)


def _check_error_inplace(op, ei: ErrorInput) -> List[str]:
    """torch's in-place op on these inputs raises too (or writes): safe_ops' in-place does the same."""
    return check_inplace(op, None, ei.sample_input)


def test_sample_count():
    """Every test above ran in this process: together they checked at least MIN_SAMPLES samples."""
    expected = {p.id for p in KIND_PARAMS} | {f"{entry_id(op)}-error" for op in ENTRIES}
    missing = expected - set(SAMPLE_COUNTS)
    if missing:
        pytest.skip(f"{len(missing)} parity tests did not run in this process (selected with -k, or failed early)")
    by_kind = collections.Counter()
    for test_id, n in SAMPLE_COUNTS.items():
        by_kind[test_id.rsplit("-", 1)[1]] += n
    total = sum(by_kind.values())
    print(f"\nOpInfo parity: {total} samples checked ({dict(by_kind)})")
    assert total >= MIN_SAMPLES, f"only {total} samples checked ({dict(by_kind)}); expected at least {MIN_SAMPLES}"
