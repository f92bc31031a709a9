"""Dtypes without a hand-written kernel (integer, bool, complex) and complex/bool numbers go to torch's own op of
the same schema (csrc/core/twin.h): torch's values, dtypes, errors and autograd, through every entry (the Python
wrappers, torch.ops, torch.compile, forward mode)."""
import pytest
import torch

import safe_ops
import safe_ops._wrappers

from op_table import OP_TABLE, OPS_BY_NAME, op_checks, skip_if

C128 = torch.complex128


def _cases(dtype):
    """Every row's twin cases in `dtype` (tests/op_table/: `twin_cases`)."""
    def t(*shape):
        if dtype == torch.bool:
            return torch.rand(*shape) > 0.5
        if dtype.is_complex:
            return torch.randn(*shape, dtype=dtype)
        return torch.randint(0 if dtype == torch.uint8 else -5, 6, shape, dtype=dtype)

    number = {torch.bool: True, torch.int64: 3, torch.int32: -2, torch.uint8: 2}.get(dtype, 0.5 - 1.5j)
    pos = (t(3, 4) if dtype.is_complex else torch.randint(1, 6, (3, 4), dtype=dtype)) if dtype != torch.bool else None
    return [(info.name, args, kwargs) for info in OP_TABLE for args, kwargs in info.twin_cases(dtype, t, number, pos)]


DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, C128]
CASES = [(dtype, *c) for dtype in DTYPES for c in _cases(dtype)]
IDS = [f"{name}-{str(dtype)[6:]}-{i}" for i, (dtype, name, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("dtype, name, args, kwargs", CASES, ids=IDS)
def test_values_and_dtype_are_torchs(dtype, name, args, kwargs):
    want = getattr(torch, name)(*args, **kwargs)
    got = getattr(safe_ops, name)(*args, **kwargs)
    assert got.dtype == want.dtype and torch.equal(got, want)
    target = args[0].clone()
    expected = getattr(args[0].clone(), f"{name}_")(*args[1:], **kwargs)
    with torch.no_grad():
        written = getattr(safe_ops, f"{name}_")(target, *args[1:], **kwargs)
    assert written is target and torch.equal(written, expected)


@pytest.mark.parametrize("dtype, name, args, kwargs", CASES, ids=IDS)
def test_opcheck(dtype, name, args, kwargs):
    op = safe_ops._wrappers.overload_for(name, *args, **kwargs)
    torch.library.opcheck(op, args, kwargs)


COMPLEX_GRAD_CASES = [pytest.param(info.name, args, kwargs, id=f"{info.name}-{case_id}") for info in OP_TABLE
                      for case_id, args, kwargs in info.complex_grad_cases(C128)]


@pytest.mark.parametrize("name, args, kwargs", COMPLEX_GRAD_CASES)
def test_complex_gradients_forward_mode_and_gradgrad(name, args, kwargs):
    leaves = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
    op = getattr(safe_ops, name)

    def call(*ts):
        it = iter(ts)
        return op(*[next(it) if isinstance(a, torch.Tensor) else a for a in leaves], **kwargs)

    assert torch.autograd.gradcheck(call, tensors)
    assert torch.autograd.gradgradcheck(call, tensors)
    tangents = [torch.randn_like(t) for t in tensors]
    ref = torch.func.jvp(lambda *ts: getattr(torch, name)(*_fill(leaves, ts), **kwargs), tuple(tensors),
                         tuple(tangents))
    got = torch.func.jvp(call, tuple(tensors), tuple(tangents))
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def _fill(leaves, ts):
    it = iter(ts)
    return [next(it) if isinstance(a, torch.Tensor) else a for a in leaves]


COMPILE_CASES = [pytest.param(name, args, kwargs, id=f"{name}-{str(dtype)[6:]}") for dtype, name, args, kwargs in CASES
                 if dtype in (torch.int64, torch.complex64)]


@pytest.mark.parametrize("name, args, kwargs", COMPILE_CASES)
def test_compiled_integer_and_complex_calls_equal_eager(name, args, kwargs):
    if any(isinstance(a, complex) for a in args):
        skip_if(OPS_BY_NAME[name], "compiled, a complex number argument")
    torch._dynamo.reset()
    f = torch.compile(lambda *a: getattr(safe_ops, name)(*a, **kwargs), fullgraph=True)
    want = getattr(torch, name)(*args, **kwargs)
    got = f(*args)
    assert got.dtype == want.dtype
    if want.is_complex():
        torch.testing.assert_close(got, want)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("check", op_checks("twin"))
def test_op_specific(check):
    check()
