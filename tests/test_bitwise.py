"""Same bits as torch's CPU kernels (issue 11): where torch fuses a + alpha*b, products and interpolations into
FMAs (its AVX2/AVX512 kernels), safe_ops does too; tails, strided and broadcast layouts
included. Expected values are torch's own results on the same inputs. The cases are the op table's
(tests/op_table/: `bitwise`, `bitwise_inplace`, `prefetch`, `grad_bitwise`, and the rows' "bitwise" checks)."""
import pytest
import torch

import safe_ops

from op_table import FLOAT_DTYPES, OP_TABLE, op_checks, ops_with

N = 4099  # not a multiple of any vector width: the loops' tails are covered
CASES = [pytest.param(case.call, id=case.id) for info in OP_TABLE for case in info.bitwise]
HALF_CASES = [pytest.param(case.call, id=case.id) for info in OP_TABLE for case in info.bitwise if case.half]


def layouts(x, dtype):
    yield "contiguous", x
    yield "strided", torch.zeros(2 * N, dtype=dtype)[::2].copy_(x)
    yield "transposed", x[: 64 * 64].reshape(64, 64).t()


def _inputs(dtype, layout):
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(N, generator=g).to(dtype) for _ in range(3)] + [torch.rand(N, generator=g).to(dtype)]
    return [dict(layouts(x, dtype))[layout] for x in base]


@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("call", CASES)
def test_bitwise_equal_to_torch(call, dtype, layout):
    a, b, c, w = _inputs(dtype, layout)
    expected = call(torch, a, b, c, w)
    got = call(safe_ops, a, b, c, w)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected), f"{(got != expected).sum().item()} of {got.numel()} elements differ"


# float16/bfloat16: ops computed in float32 and rounded once agree bit for bit; torch's a + alpha*b with alpha != 1
# rounds alpha to the half type and, off its vectorised path, rounds the product too (see README): those cases
# are not `half`.
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("call", HALF_CASES)
def test_bitwise_equal_to_torch_half(call, dtype, layout):
    a, b, c, w = _inputs(dtype, layout)
    assert torch.equal(call(safe_ops, a, b, c, w), call(torch, a, b, c, w))


@pytest.mark.parametrize("info", ops_with("bitwise_inplace"), ids=lambda i: i.name + "_")
def test_inplace_bitwise_equal_to_torch_method(info):
    a, b, c, _ = _inputs(torch.float32, "contiguous")
    args, kwargs = info.bitwise_inplace(b, c)
    expected = getattr(a.clone(), info.torch_inplace())(*args, **kwargs)
    with torch.no_grad():
        got = info.inplace(a.clone(), *args, **kwargs)
    assert torch.equal(got, expected)


# In-place calls on operands beyond the caches take the K-input loop's prefetching path (csrc/cpu/kernels.cpp,
# from 4 MB streamed): the same sums in the same order, so the same bits as torch's in-place ops (and as a
# documented order where torch has no such op).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("info", ops_with("prefetch"), ids=lambda i: i.name + "_")
def test_prefetching_loops_bitwise(info, dtype):
    g = torch.Generator().manual_seed(1)
    n = (1 << 20) + 5  # >= 4 MB over 3 streams in every dtype here; not a multiple of the prefetch chunk
    for got, expected in info.prefetch(dtype, g, n):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("check", op_checks("bitwise"))
def test_op_specific(check):
    check()


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


GRAD_CASES = [pytest.param(call, leaves, id=case_id) for info in OP_TABLE
              for case_id, call, leaves in info.grad_bitwise]


# Gradients in torch's order (derivatives.yaml: grad * (tensor2 * value), grad * alpha, then the engine's sum_to
# for a broadcast input), rounding where torch's formula rounds to the dtype, so they have torch's bits too.
# 0.3 and 0.7 take both halves of an interpolation weight; -3.125 is not representable in a half product with
# most inputs.
@pytest.mark.parametrize("scalar", [0.3, 0.7, -3.125])
@pytest.mark.parametrize("broadcast", [False, True], ids=["full", "broadcast"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("call, nleaves", GRAD_CASES)
def test_gradients_bitwise_equal_to_torch(call, nleaves, dtype, broadcast, scalar):
    g = torch.Generator().manual_seed(3)
    shape = (64, 257)

    def make(s, positive=False):
        t = torch.randn(s, generator=g, dtype=dtype)
        return (t.abs() + 0.5 if positive else t).requires_grad_()

    a = make(shape)
    b = make((257,) if broadcast else shape)
    c = make((64, 1) if broadcast else shape, positive=True)
    cotangent = torch.randn(shape, generator=g, dtype=dtype)
    leaves = (a, b, c)[:nleaves]
    expected = torch.autograd.grad(call(torch, a, b, c, scalar), leaves, cotangent)
    got = torch.autograd.grad(call(safe_ops, a, b, c, scalar), leaves, cotangent)
    for i, (ours, theirs) in enumerate(zip(got, expected)):
        assert torch.equal(_bits(ours), _bits(theirs)), f"grad {i}: {(ours != theirs).sum().item()} elements differ"
