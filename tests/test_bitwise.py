"""Same bits as torch's CPU kernels (issue 11): where torch fuses a + alpha*b, addcmul and lerp into FMAs (its
AVX2/AVX512 kernels), safe_ops does too; tails, strided and broadcast layouts included. Expected values are
torch's own results on the same inputs."""
import pytest
import torch

import safe_ops

from op_table import FLOAT_DTYPES

N = 4099  # not a multiple of any vector width: the loops' tails are covered


def layouts(x, dtype):
    yield "contiguous", x
    yield "strided", torch.zeros(2 * N, dtype=dtype)[::2].copy_(x)
    yield "transposed", x[: 64 * 64].reshape(64, 64).t()


CASES = [
    ("add", lambda m, a, b, c, w: m.add(a, b, alpha=-0.3)),
    ("add_scalar", lambda m, a, b, c, w: m.add(a, 0.1, alpha=-0.3)),
    ("sub", lambda m, a, b, c, w: m.sub(a, b, alpha=0.7)),
    ("addcmul", lambda m, a, b, c, w: m.addcmul(a, b, c, value=-0.3)),
    ("addcdiv", lambda m, a, b, c, w: m.addcdiv(a, b, c, value=-0.3)),
    ("lerp_small", lambda m, a, b, c, w: m.lerp(a, b, 0.3)),
    ("lerp_large", lambda m, a, b, c, w: m.lerp(a, b, 0.7)),
    ("lerp_tensor", lambda m, a, b, c, w: m.lerp(a, b, w)),
]


def test_add_broadcast_one_element_differs_at_most_in_torch_scalar_tail():
    # torch computes a + alpha*b with b a broadcast one-element tensor fused in its vectorised body but not in the
    # tail its scalar loop handles (under 2 vector widths at the end of each row); safe_ops fuses every element.
    for dtype in (torch.float32, torch.float64):
        a, b, _, _ = _inputs(dtype, "contiguous")
        one = b[:1].expand(N)
        bad = (safe_ops.add(a, one, alpha=1.7) != torch.add(a, one, alpha=1.7)).nonzero().flatten()
        assert bad.numel() == 0 or bad.min().item() >= N - N % 64 - 64


def _inputs(dtype, layout):
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(N, generator=g).to(dtype) for _ in range(3)] + [torch.rand(N, generator=g).to(dtype)]
    return [dict(layouts(x, dtype))[layout] for x in base]


@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,call", CASES, ids=[c[0] for c in CASES])
def test_bitwise_equal_to_torch(name, call, dtype, layout):
    a, b, c, w = _inputs(dtype, layout)
    expected = call(torch, a, b, c, w)
    got = call(safe_ops, a, b, c, w)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected), f"{(got != expected).sum().item()} of {got.numel()} elements differ"


# float16/bfloat16: ops computed in float32 and rounded once agree bit for bit; torch's add with alpha != 1
# rounds alpha to the half type and, off its vectorised path, rounds the product too (see README).
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["addcmul", "addcdiv", "lerp_small", "lerp_large", "lerp_tensor"])
def test_bitwise_equal_to_torch_half(name, dtype, layout):
    call = dict(CASES)[name]
    a, b, c, w = _inputs(dtype, layout)
    assert torch.equal(call(safe_ops, a, b, c, w), call(torch, a, b, c, w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_add_unit_alpha_bitwise(dtype):
    a, b, _, _ = _inputs(dtype, "contiguous")
    assert torch.equal(safe_ops.add(a, b), torch.add(a, b))
    assert torch.equal(safe_ops.sub(a, b), torch.sub(a, b))


@pytest.mark.parametrize("name", ["add_", "sub_", "addcmul_", "lerp_"])
def test_inplace_bitwise_equal_to_torch_method(name):
    a, b, c, _ = _inputs(torch.float32, "contiguous")
    args = {"add_": (b,), "sub_": (b,), "addcmul_": (b, c), "lerp_": (b, 0.3)}[name]
    kwargs = {"add_": {"alpha": -0.3}, "sub_": {"alpha": 0.7}, "addcmul_": {"value": -0.3}, "lerp_": {}}[name]
    expected = getattr(a.clone(), name)(*args, **kwargs)
    with torch.no_grad():
        got = getattr(safe_ops, name)(a.clone(), *args, **kwargs)
    assert torch.equal(got, expected)


# In-place calls on operands beyond the caches take the K-input loop's prefetching path (csrc/cpu/kernels.cpp,
# from 4 MB streamed): the same sums in the same order, so the same bits as torch's add_ and as accumulate_'s
# documented order (the target first, then each term).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_prefetching_loops_bitwise(dtype):
    from op_table import accumulate_ref

    g = torch.Generator().manual_seed(1)
    n = (1 << 20) + 5  # >= 4 MB over 3 streams in every dtype here; not a multiple of the prefetch chunk
    a, b = (torch.randn(n, generator=g).to(dtype) for _ in range(2))
    assert torch.equal(safe_ops.add_(a.clone(), b, alpha=0.7), a.clone().add_(b, alpha=0.7))
    assert torch.equal(safe_ops.sub_(a.clone(), b, alpha=0.7), a.clone().sub_(b, alpha=0.7))
    target = torch.randn(n // 4, generator=g).to(dtype)
    xs = [torch.randn(n // 4, generator=g).to(dtype) for _ in range(9)]  # 10 inputs: two groups per block
    weights = [0.5 * i - 1.25 for i in range(9)]
    wide = torch.promote_types(dtype, torch.float32)  # half types sum in float32 and round once (README)
    expected = accumulate_ref([t.to(wide) for t in [target] + xs], [1.0] + weights).to(dtype)
    assert safe_ops.accumulate_(target, xs, weights) is target
    assert torch.equal(target, expected)


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


# At a number weight of exactly 1 torch's zeros take their sign from its loop (vectorised body and scalar tail
# compute two forms of the formula): safe_ops runs torch's kernel there, so even the zero signs are torch's.
@pytest.mark.parametrize("weight", [1, 1.0, 1 - 1e-10])  # the last is 1 in float32
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_lerp_at_weight_one_keeps_torch_zero_signs(dtype, weight):
    g = torch.Generator().manual_seed(2)
    start = torch.randn(N, generator=g).to(dtype)
    end = torch.zeros(N, dtype=dtype)
    end[::3] = -0.0
    expected = torch.lerp(start, end, weight)
    assert not torch.equal(_bits(expected), _bits(end)) or dtype == torch.float64  # torch's zeros do differ
    assert torch.equal(_bits(safe_ops.lerp(start, end, weight)), _bits(expected))
    assert torch.equal(_bits(safe_ops.lerp_(start.clone(), end, weight)), _bits(start.clone().lerp_(end, weight)))
    ours, theirs = [start.clone(), start[1:].clone()], [start.clone(), start[1:].clone()]
    safe_ops.foreach_lerp_(ours, [end, end[1:]], weight)
    torch._foreach_lerp_(theirs, [end, end[1:]], weight)
    assert all(torch.equal(_bits(o), _bits(t)) for o, t in zip(ours, theirs))


GRAD_CASES = [
    ("add", lambda m, a, b, c, k: m.add(a, b, alpha=k)),
    ("sub", lambda m, a, b, c, k: m.sub(a, b, alpha=k)),
    ("addcmul", lambda m, a, b, c, k: m.addcmul(a, b, c, value=k)),
    ("addcdiv", lambda m, a, b, c, k: m.addcdiv(a, b, c, value=k)),
    ("lerp_number", lambda m, a, b, c, k: m.lerp(a, b, k)),
    ("lerp_tensor", lambda m, a, b, c, k: m.lerp(a, b, c)),
]


# Gradients in torch's order (derivatives.yaml: grad * (tensor2 * value), grad * alpha, then the engine's sum_to
# for a broadcast input), rounding where torch's formula rounds to the dtype, so they have torch's bits too.
# 0.3 and 0.7 take both halves of lerp's weight; -3.125 is not representable in a half product with most inputs.
@pytest.mark.parametrize("scalar", [0.3, 0.7, -3.125])
@pytest.mark.parametrize("broadcast", [False, True], ids=["full", "broadcast"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("name,call", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_bitwise_equal_to_torch(name, call, dtype, broadcast, scalar):
    g = torch.Generator().manual_seed(3)
    shape = (64, 257)

    def make(s, positive=False):
        t = torch.randn(s, generator=g, dtype=dtype)
        return (t.abs() + 0.5 if positive else t).requires_grad_()

    a = make(shape)
    b = make((257,) if broadcast else shape)
    c = make((64, 1) if broadcast else shape, positive=True)
    cotangent = torch.randn(shape, generator=g, dtype=dtype)
    leaves = (a, b, c) if name in ("addcmul", "addcdiv", "lerp_tensor") else (a, b)
    expected = torch.autograd.grad(call(torch, a, b, c, scalar), leaves, cotangent)
    got = torch.autograd.grad(call(safe_ops, a, b, c, scalar), leaves, cotangent)
    for i, (ours, theirs) in enumerate(zip(got, expected)):
        assert torch.equal(_bits(ours), _bits(theirs)), f"grad {i}: {(ours != theirs).sum().item()} elements differ"
