"""No false alarms: the usual in-place idioms, exact overlap tests for strided views, optimizer steps,
BatchNorm.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from guard_helpers import DT, XW, grads, leaf, live_records

import safe_ops
from safe_ops import InplaceHazardError
from safe_ops.guard._extent import elements_overlap, extent


def test_seed_loop():
    x = torch.ones(4, requires_grad=True)
    with safe_ops.guard():
        total = torch.zeros(4)
        for i in range(5):
            total.add_(x * i)
    total.sum().backward()
    assert torch.equal(x.grad, torch.full((4,), 10.0))


def test_seed_loop_with_safe_ops():
    x = torch.ones(4, requires_grad=True)
    with safe_ops.guard():
        total = torch.zeros(4)
        for i in range(5):
            total = safe_ops.add_(total, x, alpha=i)
    total.sum().backward()
    assert torch.equal(x.grad, torch.full((4,), 10.0))


def _no_alarm_cases():
    def unsaved_add_output(x, w):
        y = x + w
        y.mul_(2)
        return (y * y).sum()

    def matmul_output(x, w):
        y = x @ w.t()
        y.add_(1)
        return (y * y).sum()

    def input_of_op_saving_only_its_output(x, w):
        a = x * 1
        y = a.exp()
        a.add_(1)
        return y.sum() + (a * a).sum()

    def disjoint_slice_of_saved_base(x, w):  # PyTorch itself raises here (shared version counter)
        a = x * 1
        y = a[:, :2] * w[:, :2]
        a[:, 2:] += 1
        return y.sum() + (a * a).sum()

    def interleaved_columns(x, w):  # byte ranges overlap, elements do not
        a = x * 1
        y = a[:, ::2] * w[:, ::2]
        a[:, 1::2].mul_(2)
        return y.sum() + (a * a).sum()

    def write_after_backward(x, w):
        y = x.exp()
        y.sum().backward()
        y.mul_(2)
        return (x * w).sum()

    def fresh_buffer(x, w):
        buf = torch.zeros(3, 4, dtype=DT)
        buf.add_(x.detach())
        buf.mul_(w.detach())
        return (x * buf).sum()

    def relu_inplace_after_linear(x, w):
        y = F.linear(x, w)
        y = F.relu(y, inplace=True)
        return (y * y).sum()

    def dropout_inplace_after_matmul(x, w):
        torch.manual_seed(0)
        y = x @ w.t()
        y = F.dropout(y, 0.5, training=True, inplace=True)
        return (y * y).sum()

    def gelu_output_scaled(x, w):  # gelu saves its input, not its output
        y = F.gelu(x * w)
        y.mul_(0.5)
        return (y * y).sum()

    def metadata_op_on_saved_input(x, w):  # PyTorch itself raises here; the guard's alias keeps the shape
        a = x * 1
        y = a * w
        a.t_()
        return y.sum() + a.sum()

    def no_grad_forward(x, w):
        with torch.no_grad():
            y = x.sigmoid()
            y.mul_(2)
        return (x * y).sum()

    return [unsaved_add_output, matmul_output, input_of_op_saving_only_its_output, disjoint_slice_of_saved_base,
            interleaved_columns, write_after_backward, fresh_buffer, relu_inplace_after_linear,
            dropout_inplace_after_matmul, gelu_output_scaled, metadata_op_on_saved_input, no_grad_forward]


NO_ALARM = _no_alarm_cases()


@pytest.mark.parametrize("fn", NO_ALARM, ids=[f.__name__ for f in NO_ALARM])
def test_no_false_alarm(fn):
    x, w = XW()
    xr, wr = XW()
    g = safe_ops.guard("raise")
    got = grads(fn, (x, w), g)
    assert g.stats.hazards == 0
    # Reference: the same code with every saved tensor copied at save time (no write can reach it).
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
        expected = grads(fn, (xr, wr))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert live_records() == 0


def test_overlap_is_exact_for_large_interleaved_views():
    """Beyond the byte-mask bound, interleaved views (e.g. rotary embeddings' even/odd halves) stay exact."""
    x = torch.rand(512, 1024, requires_grad=True)  # 2 MiB
    with safe_ops.guard() as g:
        a = x * 1
        y = a[:, ::2] * a[:, ::2]
        a[:, 1::2].mul_(2)
        with pytest.raises(InplaceHazardError, match="MulBackward0"):
            a[:, 2::4].zero_()
    (y.sum() + a.sum()).backward()
    assert g.stats.hazards == 1


def test_overlap_test_against_brute_force():
    """Random strided views of one storage, of several element sizes: the overlap test equals the byte sets'."""
    rng = torch.Generator().manual_seed(0)
    buf = torch.zeros(2048, dtype=torch.uint8)
    dtypes = [torch.uint8, torch.int16, torch.float32, torch.float64]

    def rand_view():
        dtype = dtypes[int(torch.randint(4, (1,), generator=rng))]
        base = buf.view(dtype)
        dims = int(torch.randint(1, 4, (1,), generator=rng))
        shape = [int(v) for v in torch.randint(1, 5, (dims,), generator=rng)]
        stride = [int(v) for v in torch.randint(0, 7, (dims,), generator=rng)]
        offset = int(torch.randint(0, 12, (1,), generator=rng))
        view = base.as_strided(shape, stride, offset)
        size = view.element_size()
        bytes_ = set()
        for index in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, dims).tolist():
            start = (offset + sum(i * st for i, st in zip(index, stride))) * size
            bytes_.update(range(start, start + size))
        return view, bytes_

    checked = 0
    for _ in range(3000):
        (a, bytes_a), (b, bytes_b) = rand_view(), rand_view()
        expected = bool(bytes_a & bytes_b)
        got = elements_overlap(extent(a), extent(b))
        assert got == expected, (a.shape, a.stride(), a.storage_offset(), a.dtype, b.shape, b.stride(),
                                 b.storage_offset(), b.dtype)
        checked += expected
    assert 300 < checked < 2700  # both outcomes well represented


def test_optimizer_steps_after_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    twin = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    twin.load_state_dict(model.state_dict())
    data = torch.randn(5, 8)
    for m, use_guard in ((model, True), (twin, False)):
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), torch.optim.Adam(m.parameters(), lr=1e-3)]
        for _ in range(3):
            with safe_ops.guard() if use_guard else torch.enable_grad():
                loss = m(data).pow(2).sum()
                loss.backward()
                for opt in opts:
                    opt.step()
                    opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_batchnorm_twice_before_backward():
    bn = nn.BatchNorm1d(4).double()
    x = leaf(6, 4)
    with safe_ops.guard():
        loss = bn(x).pow(2).sum() + bn(x * 2).pow(2).sum()
    loss.backward()
