"""What PyTorch misses: .data writes, writes under saved_tensors_hooks (the user's, save_on_cpu, checkpointing),
foreach writes under a dispatch mode, writes after the guard; copy mode's one copy of overlapping views.
"""
import pytest
import torch
from guard_helpers import DT, XW, leaf, live_records

import safe_ops
from safe_ops import InplaceHazardError

from models import BasicBlock


def test_data_write_is_caught_where_torch_is_silent():
    x = leaf(3, 4)
    y = x.sigmoid()
    y.data.mul_(2)
    y.sum().backward()  # no error: wrong gradient
    wrong = x.grad.clone()
    x.grad = None
    with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
        with safe_ops.guard():
            y = x.sigmoid()
            y.data.mul_(2)
    with safe_ops.guard("copy"):
        y = x.sigmoid()
        y.data.mul_(2)
    y.sum().backward()
    s = torch.sigmoid(x.detach())
    torch.testing.assert_close(x.grad, s * (1 - s))
    assert not torch.allclose(wrong, x.grad)


def test_user_hooks_outside_the_guard_are_kept_and_checked():
    calls = []

    def pack(t):
        calls.append("pack")
        return t.detach()

    def unpack(t):
        calls.append("unpack")
        return t

    x = leaf(3, 4)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        with pytest.raises(InplaceHazardError, match="TanhBackward0"):
            with safe_ops.guard():
                y = x.tanh()
                y.add_(1)
        assert calls == ["pack"]
        with safe_ops.guard("copy"):
            y = x.tanh()
            y.add_(1)
        y.sum().backward()
    assert calls == ["pack", "pack", "unpack"]
    torch.testing.assert_close(x.grad, 1 - x.detach().tanh() ** 2)


def test_save_on_cpu_inside_the_guard():
    """On CPU, save_on_cpu keeps the tensor itself: the write is caught. (An op's saved *output* would keep its
    graph alive through PyTorch's own reference cycle, so the case saves inputs.)"""
    x, w = XW()
    with pytest.raises(InplaceHazardError, match="MulBackward0"):
        with safe_ops.guard():
            with torch.autograd.graph.save_on_cpu():
                a = x * 1
                y = a * w
                a.add_(1)
    del y


def test_hooks_that_copy_are_not_tracked():
    """A pack hook that stores a copy makes later writes harmless: no alarm, right gradients."""
    x = leaf(3, 4)
    with safe_ops.guard():
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
            y = x.exp()
            y.add_(1)
    y.sum().backward()
    torch.testing.assert_close(x.grad, x.detach().exp())


def _sigmoid_doubled(z):
    y = z.sigmoid()
    y.mul_(2)  # checkpointing saves nothing here: backward recomputes `y` (and stops before this write)
    return y


def test_checkpointed_regions():
    """Non-reentrant checkpointing keeps no alias of what it recomputes: writes there are no hazard."""
    from torch.utils.checkpoint import checkpoint

    x = leaf(3, 4)
    with safe_ops.guard("raise") as g:
        loss = checkpoint(_sigmoid_doubled, x * 1, use_reentrant=False).sum()
    loss.backward()
    s = x.detach().sigmoid()
    torch.testing.assert_close(x.grad, 2 * s * (1 - s))
    assert g.stats.hazards == 0

    torch.manual_seed(0)
    block = BasicBlock(4, 4).double()
    data = torch.randn(2, 4, 6, 6, dtype=DT)
    results = []
    for context in (torch.enable_grad, lambda: safe_ops.guard("raise"), lambda: safe_ops.guard("copy")):
        block.zero_grad()
        torch.manual_seed(1)
        with context():
            loss = checkpoint(block, data * 1, use_reentrant=False).pow(2).sum()
        loss.backward()
        results.append([p.grad.clone() for p in block.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    assert live_records() == 0


def test_copy_mode_copies_overlapping_saved_views_once():
    """`a @ a.t()` saves `a` and its transpose: one copy of the bytes they share, right gradients."""
    x = leaf(4, 4)
    with safe_ops.guard("copy") as g:
        a = x * 1
        y = a @ a.t()
        a[1] = 0.0
    (y.sum() + a.sum()).backward()
    xr = leaf(4, 4)
    ar = xr * 1
    (ar @ ar.t()).sum().backward()
    mask = torch.ones(4, 4, dtype=DT)
    mask[1] = 0
    torch.testing.assert_close(x.grad, xr.grad + mask)
    assert g.stats.copies == 1 and g.stats.bytes == 4 * 4 * 8

    # Neighbour differences save two shifted views: one copy of their span, each view at its own offset.
    x = leaf(6)
    with safe_ops.guard("copy") as g:
        a = x * 1
        y = a[1:] * a[:-1]
        a[2] = 0.0
    y.sum().backward()
    xr = leaf(6)
    ar = xr * 1
    (ar[1:] * ar[:-1]).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    assert g.stats.copies == 1 and g.stats.bytes == 6 * 8


def test_hooks_are_only_guards():
    assert not safe_ops.guard.hooks_are_only_guards()
    with safe_ops.guard():
        assert safe_ops.guard.hooks_are_only_guards()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            assert not safe_ops.guard.hooks_are_only_guards()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        with safe_ops.guard():
            assert not safe_ops.guard.hooks_are_only_guards()


def test_foreach_write_inside_the_guard_into_a_graph_saved_outside_it():
    """Under any dispatch mode PyTorch's _foreach_*_ ops skip version bumps on tensors that require grad; the
    guard restores them, so PyTorch's own check still catches writes into graphs built without the guard."""
    x = leaf(3, 4)
    y = x.exp()  # saved by a graph built outside any guard: PyTorch's version check applies
    with safe_ops.guard():
        torch._foreach_mul_([y], 2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_write_after_the_guard_fails_at_backward_instead_of_silently():
    """The guard's hooks turn off PyTorch's version check; the guard's unpack repeats it."""
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.sigmoid()
    y.mul_(2)
    with pytest.raises(InplaceHazardError, match="did not see the write"):
        y.sum().backward()


class _Recorder(torch.autograd.Function):
    """Identity whose backward records the innermost dispatch mode it runs under, and optionally writes into
    what it saved (a tensor another node saved too)."""

    modes = []

    @staticmethod
    def forward(ctx, a, write):
        ctx.save_for_backward(a)
        ctx.write = write
        return a * 1

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        _Recorder.modes.append(torch.utils._python_dispatch._get_current_dispatch_mode())
        if ctx.write:
            with torch.no_grad():
                a.mul_(2)
        return grad, None


class _Counting(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_backward_inside_the_guard_runs_without_its_mode():
    """The mode would double a training step's cost; backward and autograd.grad run without it (a user's mode
    entered inside the guard stays), and the entry points are torch's own again after the guard."""
    original = torch.autograd.backward, torch.autograd.grad
    _Recorder.modes.clear()
    x = leaf(3, 4)
    with safe_ops.guard():
        _Recorder.apply(x.sigmoid(), False).sum().backward()
        torch.autograd.grad(_Recorder.apply(x.exp(), False).sum(), x)
        with _Counting() as counting:
            _Recorder.apply(x.tanh(), False).sum().backward()
    assert _Recorder.modes[:2] == [None, None] and _Recorder.modes[2] is counting and counting.ops > 3
    assert (torch.autograd.backward, torch.autograd.grad) == original
    s = x.detach().sigmoid()
    torch.testing.assert_close(x.grad, s * (1 - s) + 1 - x.detach().tanh() ** 2)


def test_write_during_backward_into_a_saved_value_still_fails():
    """Backward is not watched, but what it reads is: a write there into a value a later node reads fails at
    that unpack (the guard's version check), as PyTorch's own check fails without the guard."""
    x = leaf(3, 4)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _Recorder.apply(x.exp(), True).sum().backward()
    with safe_ops.guard():
        with pytest.raises(InplaceHazardError, match="ExpBackward0 saved for backward.*did not see the write"):
            _Recorder.apply(x.exp(), True).sum().backward()
    assert live_records() == 0
