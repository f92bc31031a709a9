"""Dtypes without a hand-written kernel (integer, bool, complex) and complex/bool numbers go to torch's own op of
the same schema (csrc/twin.h): torch's values, dtypes, errors and autograd, through every entry (the Python
wrappers, torch.ops, torch.compile, forward mode)."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import safe_ops
import safe_ops._wrappers

C128 = torch.complex128


def _cases(dtype):
    def t(*shape):
        if dtype == torch.bool:
            return torch.rand(*shape) > 0.5
        if dtype.is_complex:
            return torch.randn(*shape, dtype=dtype)
        return torch.randint(0 if dtype == torch.uint8 else -5, 6, shape, dtype=dtype)

    number = {torch.bool: True, torch.int64: 3, torch.int32: -2, torch.uint8: 2}.get(dtype, 0.5 - 1.5j)
    pos = (t(3, 4) if dtype.is_complex else torch.randint(1, 6, (3, 4), dtype=dtype)) if dtype != torch.bool else None
    cases = [
        ("add", (t(3, 4), t(4)), {"alpha": number}),
        ("sub", (t(3, 4), t(3, 1)), {"alpha": number}) if dtype != torch.bool else None,
        ("add", (t(3, 4), number), {}),
        ("addcmul", (t(3, 4), t(3, 4), t(4)), {"value": number}) if dtype != torch.bool else None,
        ("addcdiv", (t(3, 4), t(3, 4), pos), {"value": number}) if dtype.is_complex else None,
        ("lerp", (t(3, 4), t(3, 4), number), {}) if dtype.is_complex else None,
        ("lerp", (t(3, 4), t(3, 4), t(4)), {}) if dtype.is_complex else None,
    ]
    return [c for c in cases if c is not None]


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


@pytest.mark.parametrize("name, args, kwargs", [
    ("add", (torch.randn(5, dtype=C128), torch.randn(5, dtype=C128)), {"alpha": 2 - 1j}),
    ("sub", (torch.randn(5, dtype=C128), 1 + 2j), {}),
    ("addcmul", (torch.randn(5, dtype=C128), torch.randn(5, dtype=C128), torch.randn(5, dtype=C128)),
     {"value": 0.5j}),
    ("addcdiv", (torch.randn(5, dtype=C128), torch.randn(5, dtype=C128), torch.randn(5, dtype=C128) + 3), {}),
    ("lerp", (torch.randn(5, dtype=C128), torch.randn(5, dtype=C128), torch.randn(5, dtype=C128)), {}),
    ("lerp", (torch.randn(5, dtype=C128), torch.randn(5, dtype=C128), 0.25 + 0.5j), {}),
    # real tensors, complex tensor: promotes to complex
    ("add", (torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=C128)), {}),
])
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


def test_dual_tensors_keep_their_complex_tangent():
    x = torch.randn(4, dtype=C128)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, torch.ones_like(x))
        tangent = fwAD.unpack_dual(safe_ops.add(d, d, alpha=1j)).tangent
    assert torch.equal(tangent, torch.full_like(x, 1 + 1j))


def test_compiled_integer_and_complex_calls_equal_eager():
    f = torch.compile(lambda a, b: safe_ops.addcmul(safe_ops.add(a, b, alpha=3), a, b), fullgraph=True)
    ints = torch.arange(6).reshape(2, 3)
    assert torch.equal(f(ints, ints), torch.addcmul(torch.add(ints, ints, alpha=3), ints, ints))
    z = torch.randn(2, 3, dtype=torch.complex64)
    torch.testing.assert_close(f(z, z), torch.addcmul(torch.add(z, z, alpha=3), z, z))


@pytest.mark.parametrize("kwargs, error", [({"alpha": 0.5}, RuntimeError), ({"alpha": True}, RuntimeError)])
def test_number_errors_are_torchs(kwargs, error):
    ints = torch.arange(4)
    for op in (torch.add, safe_ops.add):
        with pytest.raises(error):
            op(ints, ints, **kwargs)
    x = torch.randn(4)
    for op in (torch.add, safe_ops.add):
        with pytest.raises(RuntimeError, match="complex"):
            op(x, x, alpha=1j)
