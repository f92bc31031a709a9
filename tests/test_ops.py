"""Functional ops against torch: values, dtypes, strides, gradients, opcheck, saved tensors, compile."""
import itertools

import pytest
import torch

import safe_ops

from op_table import FLOAT_DTYPES, OP_TABLE, check_gradients, op_ids, replace_tensors

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def _significant_strides(t):
    return [s for s, n in zip(t.stride(), t.shape) if n > 1]


def _reference_in_float64(info, sample):
    return info.ref(*replace_tensors(sample, lambda t: t.detach().double()).args, **sample.kwargs)


def check_parity(info, sample, dtype):
    out = info.op(*sample.args, **sample.kwargs)
    expected = info.ref(*sample.args, **sample.kwargs)
    assert out.dtype == expected.dtype, sample.desc
    assert out.shape == expected.shape, sample.desc
    assert out.device == expected.device, sample.desc
    assert _significant_strides(out) == _significant_strides(expected), sample.desc
    if info.exact(sample, dtype):
        assert torch.equal(out, expected), sample.desc
    elif dtype in (torch.float16, torch.bfloat16):
        # One rounding of an fp32 computation: within an ulp or so of the exact result rounded to dtype.
        ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
        exact = _reference_in_float64(info, sample).to(dtype)
        torch.testing.assert_close(out, exact, rtol=2 * ulp, atol=1e-5, msg=sample.desc)
    else:
        torch.testing.assert_close(out, expected, msg=sample.desc)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_parity_with_torch(info, dtype, device):
    torch.manual_seed(0)
    n = 0
    for sample in info.samples(dtype, device):
        check_parity(info, sample, dtype)
        n += 1
    assert n > 5


PROMOTION_CASES = [
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.float16),
    (torch.float32, torch.float64),
    (torch.int64, torch.float32),
    (torch.float64, torch.float32),
]


@pytest.mark.parametrize("dtypes", PROMOTION_CASES, ids=str)
@pytest.mark.parametrize("zero_dim_second", [False, True])
def test_type_promotion(dtypes, zero_dim_second):
    torch.manual_seed(0)
    a = (torch.randn(3, 4) * 4).to(dtypes[0])
    b = (torch.randn(() if zero_dim_second else (3, 4)) * 4).to(dtypes[1])
    c = torch.randn(4).to(dtypes[1])
    cases = [
        (safe_ops.add(a, b, alpha=2), torch.add(a, b, alpha=2)),
        (safe_ops.sub(b, a), torch.sub(b, a)),
        (safe_ops.accumulate([a, b, c], [1, -2, 3]), a + b * -2 + c * 3),
        (safe_ops.addcmul(a.float() if not a.is_floating_point() else a, b, c),
         torch.addcmul(a.float() if not a.is_floating_point() else a, b, c)),
    ]
    for ours, theirs in cases:
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=1e-2, atol=1e-2)


def test_number_promotion():
    ints = torch.arange(6).reshape(2, 3)
    assert safe_ops.add(ints, 2.5).dtype == torch.add(ints, 2.5).dtype == torch.float32
    half = torch.randn(5).half()
    assert safe_ops.add(half, 1e-4).dtype == torch.float16
    assert torch.equal(safe_ops.add(half, 3.0, alpha=1), torch.add(half, 3.0))
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    xs = [torch.randn(4), torch.randn(4)]
    # weights count as 0-dim tensors (as in Σ w[i]·x[i]): float32 inputs stay float32.
    assert safe_ops.accumulate(xs, w).dtype == (xs[0] * w[0] + xs[1] * w[1]).dtype == torch.float32


def test_negative_zero_and_specials():
    a = torch.tensor([-0.0, float("inf"), float("nan"), 1.0, -float("inf")])
    b = torch.tensor([-0.0, 1.0, 2.0, float("nan"), float("inf")])
    for ours, theirs in [(safe_ops.add(a, b), torch.add(a, b)), (safe_ops.accumulate([a, b]), a + b)]:
        torch.testing.assert_close(ours, theirs, equal_nan=True)
        assert torch.equal(torch.signbit(ours), torch.signbit(theirs))


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_gradcheck(info):
    assert check_gradients(info, "cpu") > 3


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_opcheck(info, requires_grad):
    torch.manual_seed(0)
    seen = set()
    for sample in info.samples(torch.float32, "cpu", requires_grad=requires_grad):
        if sample.large:
            continue
        overload = info.overload_for(sample)
        seen.add(overload)
        torch.library.opcheck(overload, sample.args, sample.kwargs)
    assert seen == set(info.overloads)


def _saved_by(fn):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return saved, out


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_saved_tensors_are_exactly_what_backward_reads(info):
    torch.manual_seed(0)
    checked = 0
    for sample in info.samples(torch.float64, "cpu"):
        if sample.large or checked > 40:
            continue
        names = info.arg_names(sample)
        for mask in itertools.product([False, True], repeat=len(names)):
            if not any(mask):
                continue
            fresh = replace_tensors(sample, lambda t: t.detach().clone())
            tensors = fresh.tensors()
            for t, m in zip(tensors, mask):
                t.requires_grad_(m)
            requiring = frozenset(n for n, m in zip(names, mask) if m)
            saved, out = _saved_by(lambda: info.op(*fresh.args, **fresh.kwargs))
            saved_names = {n for n, t in zip(names, tensors) if any(s is t for s in saved)}
            assert len(saved) == len(saved_names), (sample.desc, requiring, len(saved))
            assert saved_names == info.expected_saved(sample, requiring), (sample.desc, requiring, saved_names)
            out.sum().backward()  # what was saved is enough for backward
            checked += 1
    assert checked > 5


def test_accumulate_reads_a_repeated_tensor_once():
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1000, dtype=torch.float64)
    out = safe_ops.accumulate([x, y, x, x], [1.0, 2.0, 3.0, 4.0])  # = 8x + 2y, x read once
    torch.testing.assert_close(out, 8 * x + 2 * y)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 8.0))
    total = torch.zeros(1000, dtype=torch.float64)
    assert safe_ops.accumulate_(total, [y] * 8, list(range(8))) is total
    torch.testing.assert_close(total, 28 * y)
    # backward gives the repeated tensor one summed gradient; broadcasting and double backward still right
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fn = lambda a, b: safe_ops.accumulate([a, b, a, b], [1.0, 2.0, -3.0, 0.5])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b)) and torch.autograd.gradgradcheck(fn, (a, b))


def test_accumulate_backward_with_unit_weights_allocates_no_gradient():
    xs = [torch.randn(8, requires_grad=True) for _ in range(3)]
    grads = torch.autograd.grad(safe_ops.accumulate(xs), xs, torch.ones(8))
    # w_i = 1: every input gets the incoming gradient itself, no copies
    assert all(g.data_ptr() == grads[0].data_ptr() for g in grads)


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_torch_compile_fullgraph_forward_and_backward(info):
    torch._dynamo.reset()
    torch.manual_seed(0)
    for sample in list(info.samples(torch.float32, "cpu", requires_grad=True))[:6]:
        if sample.large or any(t.numel() == 0 for t in sample.tensors()):
            continue
        compiled = torch.compile(lambda *args, **kw: info.op(*args, **kw).sum(), fullgraph=True, backend="aot_eager")
        fresh = replace_tensors(sample, lambda t: t.detach().clone().requires_grad_())
        eager = replace_tensors(sample, lambda t: t.detach().clone().requires_grad_())
        compiled(*fresh.args, **fresh.kwargs).backward()
        info.op(*eager.args, **eager.kwargs).sum().backward()
        for a, b in zip(fresh.tensors(), eager.tensors()):
            torch.testing.assert_close(a.grad, b.grad, msg=sample.desc)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_cpu_scalar_tensor_joins_cuda_operands():
    a = torch.randn(5, device="cuda")
    s = torch.tensor(2.0)
    torch.testing.assert_close(safe_ops.add(a, s), torch.add(a, s))
    torch.testing.assert_close(safe_ops.accumulate([a, s], [1.0, 3.0]), a + 3 * s)


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_fake_kernels_match_real_outputs_including_strides(info):
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        for sample in info.samples(dtype, "cpu"):
            real = info.op(*sample.args, **sample.kwargs)
            with FakeTensorMode(allow_non_fake_inputs=False) as mode:
                fake_sample = replace_tensors(sample, lambda t: mode.from_tensor(t))
                fake = info.op(*fake_sample.args, **fake_sample.kwargs)
            assert (fake.shape, fake.dtype, fake.device) == (real.shape, real.dtype, real.device), sample.desc
            assert _significant_strides(fake) == _significant_strides(real), sample.desc


def test_inductor_compiles_a_chain_of_all_ops_forward_and_backward():
    torch._dynamo.reset()
    torch.manual_seed(0)
    xs = [torch.randn(64, requires_grad=True) for _ in range(3)]
    w = torch.randn(3, requires_grad=True)

    def f(xs, w):
        y = safe_ops.accumulate(xs, w)
        z = safe_ops.sub(safe_ops.add(y, xs[0], alpha=2), 1.5)
        z = safe_ops.lerp(z, xs[1], 0.3)
        return safe_ops.addcmul(z, xs[2], xs[0]).sum()

    torch.compile(f, fullgraph=True)(xs, w).backward()  # default backend: inductor
    compiled = [t.grad.clone() for t in xs + [w]]
    for t in xs + [w]:
        t.grad = None
    f(xs, w).backward()
    for got, want in zip(compiled, [t.grad for t in xs + [w]]):
        torch.testing.assert_close(got, want)
