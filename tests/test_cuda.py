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
    base = torch.randn(k, n + 1, device="cuda", dtype=torch.float64)
    xs = [base[i, 1:].to(dtype) if i % 2 else base[i, :n].to(dtype) for i in range(k)]
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
    a = torch.randn(3, 1031, dtype=torch.float32)
    b = torch.randn(1031, 3, dtype=torch.float32).t()
    for ca, cb in [(a[:, 1:], b[:, 1:]), (a, b), (a[:, ::2], b[:, ::2])]:
        got = safe_ops.add(ca.cuda(), cb.cuda(), alpha=1).cpu()
        assert torch.equal(got, safe_ops.add(ca, cb))
        got = safe_ops.lerp(ca.cuda(), cb.cuda(), 0.3).cpu()
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
