"""Every catalogue pattern under raise / warn / copy, and that each is a real hazard in plain PyTorch; raise
writes nothing, double backward, warn then backward.
"""
import inspect
import warnings

import pytest
import torch
from guard_helpers import grads, leaf, live_records, marked_line, site
from hazard_catalogue import CATALOGUE, IDS, reference_grads, sigmoid_out_mul_

import safe_ops
from safe_ops import InplaceHazardError

InplaceHazardWarning = safe_ops.guard.InplaceHazardWarning


def test_catalogue_size():
    assert len(CATALOGUE) >= 20
    assert {p.torch_fails for p in CATALOGUE} == {"error", "silent"}


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_catalogue_is_a_hazard_in_torch(p):
    """Without the guard PyTorch fails at backward (pointing elsewhere), or silently computes wrong gradients."""
    expected = reference_grads(p)
    if p.torch_fails == "error":
        with pytest.raises(RuntimeError, match="modified by an inplace operation|modified inplace"):
            grads(p.fn, p.inputs())
    else:
        got = grads(p.fn, p.inputs())
        assert not all(torch.allclose(a, b) for a, b in zip(got, expected)), "expected wrong gradients"


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_catalogue_raise(p):
    inputs = p.inputs()
    with pytest.raises(InplaceHazardError) as info:
        with safe_ops.guard("raise"):
            p.fn(*inputs)
    message = str(info.value)
    write_line = marked_line(p.fn, "WRITE")
    # The exception surfaces at the writing line of the user's code.
    frames = [f for f in inspect.getinnerframes(info.tb) if f.frame.f_code is p.fn.__code__]
    assert frames and frames[-1].lineno == write_line
    assert p.op in message.splitlines()[1], message
    assert f"at {site(p.fn, 'WRITE')}" in message
    saved = [line for line in message.splitlines() if line.startswith("  saved:")]
    assert saved and p.node in saved[0], message
    assert f"saved for backward at {site(p.fn, 'SAVE')}" in saved[0], message
    assert "safe_ops.add_" in message and ".clone()" in message and 'mode="copy"' in message
    assert "float64" in saved[0]


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_catalogue_copy(p):
    expected = reference_grads(p)
    g = safe_ops.guard("copy")
    got = grads(p.fn, p.inputs(), g)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert g.stats.hazards >= 1 and g.stats.copies >= 1 and g.stats.bytes >= 8
    assert live_records() == 0


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_catalogue_warn_once_per_line(p):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with safe_ops.guard("warn"):
            for _ in range(3):
                p.fn(*p.inputs())
    ours = [w for w in caught if issubclass(w.category, InplaceHazardWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert ours[0].filename == p.fn.__code__.co_filename
    assert ours[0].lineno == marked_line(p.fn, "WRITE")
    assert p.node in str(ours[0].message)


@pytest.mark.parametrize("p", CATALOGUE, ids=IDS)
def test_catalogue_warn_then_backward_refuses(p):
    """After the warning the write happened: a backward reading the value fails (even where PyTorch would be
    silent) rather than compute wrong gradients."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with safe_ops.guard("warn"):
            loss = p.fn(*p.inputs())
    with pytest.raises(InplaceHazardError, match=f"overwritten in place at .*:{marked_line(p.fn, 'WRITE')}"):
        loss.backward()


def test_raise_writes_nothing_and_the_graph_stays_usable():
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.sigmoid()
        with pytest.raises(InplaceHazardError):
            y.mul_(2)
        assert y._version == 0
    y.sum().backward()
    s = x.detach().sigmoid()
    torch.testing.assert_close(y.detach(), s)
    torch.testing.assert_close(x.grad, s * (1 - s))


def test_double_backward_inside_the_guard():
    x = leaf(3, 4)
    with safe_ops.guard() as g:
        y = (x.sigmoid() * x).sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    xr = leaf(3, 4)
    (gr,) = torch.autograd.grad((xr.sigmoid() * xr).sum(), xr, create_graph=True)
    (ggr,) = torch.autograd.grad(gr.pow(2).sum(), xr)
    torch.testing.assert_close(ggx, ggr)
    assert g.stats.hazards == 0 and g.stats.saved > 3


def test_warn_mode_then_backward_fails_like_torch():
    """warn lets the write happen: backward then fails as PyTorch would, and says where the guard warned."""
    x = leaf(3, 4)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with safe_ops.guard("warn"):
            loss = sigmoid_out_mul_(x)
    with pytest.raises(InplaceHazardError, match="reported there by the guard's warning"):
        loss.backward()
