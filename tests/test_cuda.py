"""CUDA-only checks (they run wherever a GPU is visible; parity over the op table on CUDA is in test_ops.py)."""
import pytest
import torch

import safe_ops

from op_table import OP_TABLE, check_gradients, op_ids

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_cuda_gradcheck(info):
    assert check_gradients(info, "cuda", gradgrad=False) > 3


@pytest.mark.parametrize("k", [1, 7, 8, 9, 17])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [1, 3, 4097, 1 << 20])
def test_cuda_accumulate_groups_and_tails(k, dtype, n):
    torch.manual_seed(k)
    # Sliced on the device: odd operands start one element past 16-byte alignment (a .to() after slicing would
    # copy them to a fresh aligned buffer).
    base = torch.randn(k, n + 1, device="cuda", dtype=torch.float64).to(dtype)
    xs = [base[i, 1:] if i % 2 else base[i, :n] for i in range(k)]
    assert k == 1 or xs[1].data_ptr() % 16 != 0
    w = [0.25 * (i + 1) for i in range(k)]
    exact = sum(x.double() * wi for x, wi in zip(xs, w))
    for out in (safe_ops.accumulate(xs, w),
                safe_ops.accumulate(xs, torch.tensor(w, device="cuda", dtype=dtype))):
        tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-6)
        torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol * k)
    total = torch.randn(n, device="cuda", dtype=dtype)
    expected = total.double() + exact
    assert safe_ops.accumulate_(total, xs, w) is total
    torch.testing.assert_close(total.double(), expected, rtol=2e-2 if dtype == torch.bfloat16 else 2e-3, atol=1e-2 * k)


def test_cuda_unaligned_and_strided_inputs_match_cpu():
    torch.manual_seed(0)
    # Moved first, sliced on the device: .cuda() of a view would make a fresh aligned contiguous tensor.
    a = torch.randn(3, 1032, dtype=torch.float32, device="cuda")
    b = torch.randn(1032, 3, dtype=torch.float32, device="cuda").t()
    flat_a, flat_b = a.reshape(-1)[1:3000], a.reshape(-1)[5:3004]  # contiguous, 4 and 20 bytes past alignment
    cases = [(a[:, 1:], b[:, 1:]), (a, b), (a[:, ::2], b[:, ::2]), (flat_a, flat_b), (flat_a, a.reshape(-1)[:2999])]
    assert flat_a.data_ptr() % 16 != 0 and flat_a.is_contiguous()
    for ca, cb in cases:
        got = safe_ops.add(ca, cb, alpha=1)
        assert torch.equal(got.cpu(), safe_ops.add(ca.cpu(), cb.cpu()))
        got = safe_ops.lerp(ca, cb, 0.3)
        torch.testing.assert_close(got, torch.lerp(ca, cb, 0.3))


def test_cuda_runs_on_the_current_stream():
    stream = torch.cuda.Stream()
    x = torch.randn(1 << 20, device="cuda")
    with torch.cuda.stream(stream):
        y = safe_ops.accumulate([x, x, x], [1.0, 2.0, 3.0])
        z = safe_ops.add_(torch.zeros_like(x), y)
    stream.synchronize()
    torch.testing.assert_close(z, 6 * x)


def test_cuda_weights_tensor_backward_and_no_host_sync():
    xs = [torch.randn(4096, device="cuda", requires_grad=True) for _ in range(10)]
    w = torch.randn(10, device="cuda", requires_grad=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = safe_ops.accumulate(xs, w)
        grads = torch.autograd.grad(out.sum(), xs + [w])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for i in range(10):
        torch.testing.assert_close(grads[i], w.detach()[i].expand(4096))
    torch.testing.assert_close(grads[10], torch.stack([x.detach().sum() for x in xs]))


def test_cuda_64bit_indexing():
    n = (1 << 31) + 17
    free, _ = torch.cuda.mem_get_info()
    if free < 4 * n * 2 + (1 << 30):
        pytest.skip("not enough GPU memory for a 2^31-element float16 case")
    a = torch.ones(n, device="cuda", dtype=torch.float16)
    b = torch.full((n,), 2.0, device="cuda", dtype=torch.float16)
    out = safe_ops.accumulate([a, b], [1.0, 0.5])
    assert out[-1].item() == 2.0 and out[0].item() == 2.0 and out[n // 2].item() == 2.0
    del out
    assert safe_ops.add_(a, b) is a
    assert a[-1].item() == 3.0


ADAM_VALUES = [1.0, -1.0, 2.0, 0.3, -1e-3, 0.001, 1 - 0.999]


@pytest.mark.parametrize("value", ADAM_VALUES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_cuda_addcmul_addcdiv_bits_match_torch(op, dtype, value):
    """torch's CUDA order (fma, with value == 1 apart), plain, in place and foreach, bit for bit."""
    torch.manual_seed(0)
    s, t1 = (torch.randn(10007, device="cuda", dtype=dtype) for _ in range(2))
    t2 = torch.rand(10007, device="cuda", dtype=dtype) + 0.5
    want = getattr(torch, op)(s, t1, t2, value=value)
    assert torch.equal(getattr(safe_ops, op)(s, t1, t2, value=value), want)
    members = [s[:5000].clone(), s[5000:].clone()]
    getattr(safe_ops, f"foreach_{op}_")(members, [t1[:5000], t1[5000:]], [t2[:5000], t2[5000:]], value=value)
    torch_members = [s[:5000].clone(), s[5000:].clone()]
    getattr(torch, f"_foreach_{op}_")(torch_members, [t1[:5000], t1[5000:]], [t2[:5000], t2[5000:]], value=value)
    assert all(torch.equal(a, b) for a, b in zip(members, torch_members))
    assert torch.equal(torch.cat(members), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_half_gradients_with_a_number_match_torch(dtype):
    """grad * number with the number rounded to the dtype, as torch's CUDA kernels read it."""
    torch.manual_seed(1)
    s, t1, g = (torch.randn(4099, device="cuda", dtype=dtype) for _ in range(3))
    t2 = torch.rand(4099, device="cuda", dtype=dtype) + 0.5
    cases = [
        (lambda f, x, y: f.addcmul(s, x, y, value=0.3), (t1, t2)),
        (lambda f, x, y: f.addcdiv(s, x, y, value=0.3), (t1, t2)),
        (lambda f, x, y: f.lerp(x, y, 0.3), (s, t1)),
        (lambda f, x, y: f.lerp(x, y, 0.7), (s, t1)),
    ]
    for call, inputs in cases:
        ours = [x.clone().requires_grad_() for x in inputs]
        theirs = [x.clone().requires_grad_() for x in inputs]
        got = torch.autograd.grad(call(safe_ops, *ours), ours, g)
        want = torch.autograd.grad(call(torch, *theirs), theirs, g)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    xs = [x.clone().requires_grad_() for x in (s, t1)]
    got = torch.autograd.grad(safe_ops.accumulate(xs, [0.3, -1.7]), xs, g)
    assert torch.equal(got[0], g * 0.3) and torch.equal(got[1], g * -1.7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_foreach_half_alpha_and_lerp_weight_one_match_torch(dtype):
    """foreach add_ with alpha != 1 and lerp_ at weight 1 stay in the fused kernel on CUDA, with torch's bits."""
    torch.manual_seed(2)
    xs = [torch.randn(n, device="cuda", dtype=dtype) for n in (1, 31, 4097)]
    ys = [torch.randn_like(x) for x in xs]
    for ours_call, torch_call in [
        (lambda m: safe_ops.foreach_add_(m, ys, alpha=0.3), lambda m: torch._foreach_add_(m, ys, alpha=0.3)),
        (lambda m: safe_ops.foreach_lerp_(m, ys, 1.0), lambda m: torch._foreach_lerp_(m, ys, 1.0)),
    ]:
        ours, theirs = [x.clone() for x in xs], [x.clone() for x in xs]
        ours_call(ours)
        torch_call(theirs)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_cuda_foreach_takes_a_cpu_number_tensor():
    xs = [torch.randn(n, device="cuda") for n in (3, 1000)]
    ys = [torch.randn_like(x) for x in xs]
    want = [torch.add(x, y, alpha=0.5) for x, y in zip(xs, ys)]
    safe_ops.foreach_add_(xs, ys, alpha=torch.tensor(0.5))
    assert all(torch.equal(a, b) for a, b in zip(xs, want))
    safe_ops.foreach_lerp_(xs, ys, torch.tensor([0.25, 0.75]))  # one number per member, on the CPU


def test_cuda_weight_gradients_are_deterministic():
    """float64 weight gradients (dot_many) have the same bits from run to run: no atomics."""
    xs = [torch.randn(1 << 20, device="cuda", dtype=torch.float64) for _ in range(10)]
    g = torch.randn(1 << 20, device="cuda", dtype=torch.float64)
    w = torch.randn(10, device="cuda", dtype=torch.float64, requires_grad=True)
    first = torch.autograd.grad(safe_ops.accumulate(xs, w), w, g)[0]
    for _ in range(5):
        assert torch.equal(torch.autograd.grad(safe_ops.accumulate(xs, w), w, g)[0], first)
    torch.testing.assert_close(first, torch.stack([(g * x).sum() for x in xs]))
