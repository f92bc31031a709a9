"""The in-place contract where torch's in-place op is valid: safe_ops.<op>_ has exactly its effect (the same
memory written, seen through every alias and view, CopySlices history for views), so module state updated
through aliases (state_dict() values, .data, detach(), flat buffers), buffers and their views is never left
stale; hazards on state raise InplaceHazardError or, where the counts cannot see them, meet torch's own check."""
import pytest
import torch
import torch.nn as nn

import safe_ops
from safe_ops import Decision, InplaceHazardError

from clients import client
from op_table import OP_TABLE, inplace_variants

VARIANTS = inplace_variants()
F64 = torch.float64


def _torch_effect(reference):
    """torch's in-place effect of an update whose out-of-place result is reference(t, o): t.copy_(result)
    writes the same memory with CopySlices history on a view, as t.add_(o) itself would."""
    return lambda t, o: t.copy_(reference(t, o))


def _leaf(*shape):
    return torch.randn(*shape, dtype=F64, requires_grad=True)


# ---- patterns that were copies before and now have torch's effect --------------------------------------------
# Each: (update) -> (loss, leaves, target, result); run once with safe_ops and once with torch's effect.


def slice_of_nonleaf(update):
    x = _leaf(6)
    a = x * 3  # MulBackward by a number saves nothing: writing a slice of `a` is valid in torch (CopySlices)
    v = a[1:4]
    z = update(v, torch.ones(3, dtype=F64))
    return a.sum() + (z * z).sum(), [x], v, z


def data_alias_of_saved_output(update):
    # `.data` has its own version counter: torch writes it silently and exp's backward then reads the new values.
    # The counts cannot tell this alias from a Parameter's `.data`; safe_ops does what torch does (README), and
    # safe_ops.guard() reports it.
    x = _leaf(5)
    y = x.exp()
    alias = y.data
    z = update(alias, torch.ones(5, dtype=F64))
    return (y * 2).sum() + z.sum(), [x], alias, z


TORCH_EFFECT = {"slice of a non-leaf": slice_of_nonleaf, ".data alias of a saved output": data_alias_of_saved_output}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TORCH_EFFECT)
def test_valid_torch_writes_have_torch_effect(name, variant):
    safe, reference = VARIANTS[variant]
    outs = []
    for update in (safe, _torch_effect(reference)):
        torch.manual_seed(0)
        loss, leaves, target, result = TORCH_EFFECT[name](update)
        outs.append((loss.detach(), torch.autograd.grad(loss, leaves), target.detach().clone(), result is target))
    (loss, grads, target, written), (ref_loss, ref_grads, ref_target, _) = outs
    assert written, "torch's in-place op is valid here: safe_ops must write in place"
    torch.testing.assert_close(target, ref_target)
    torch.testing.assert_close(loss, ref_loss)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg)


# ---- module state ----------------------------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()


def test_timm_model_ema_v3_update_through_state_dict_aliases():
    timm_ema = client("timm.utils.model_ema")
    model = _model()
    ours, theirs = timm_ema.ModelEmaV3(model, decay=0.9, foreach=False), timm_ema.ModelEmaV3(model, decay=0.9,
                                                                                            foreach=False)
    # timm's own loop (apply_update_ over state_dict().values(), detached aliases) with safe_ops.lerp_ inside
    ours._lerp_ = lambda ema_v, model_v, weight: safe_ops.lerp_(ema_v, model_v, weight)
    before = {k: v.clone() for k, v in ours.module.state_dict().items()}
    for step in range(4):
        model.train()(torch.randn(16, 4, dtype=F64))  # moves the running stats
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ours.update(model, step=step)
        theirs.update(model, step=step)
    for (k, a), b in zip(ours.module.state_dict().items(), theirs.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=k)
        if a.is_floating_point():
            assert not torch.equal(a, before[k]), f"{k}: the EMA module was not updated"


def test_parameter_data_updates_in_grad_mode_and_under_no_grad():
    model, ref = _model(), _model()
    x = torch.randn(8, 4, dtype=F64)
    for m in (model, ref):
        m(x).sum().backward()
    for p, r in zip(model.parameters(), ref.parameters()):
        assert safe_ops.add_(p.data, p.grad, alpha=-0.1) is not None  # old-style SGD, grad mode
        r.data.add_(r.grad, alpha=-0.1)
        torch.testing.assert_close(p, r)
    with torch.no_grad():
        for p, r in zip(model.parameters(), ref.parameters()):
            assert safe_ops.lerp_(p.data, torch.zeros_like(p), 0.5) is not None
            r.data.lerp_(torch.zeros_like(r), 0.5)
            torch.testing.assert_close(p, r)


def test_detach_alias_and_flat_buffer_parameters_are_written():
    flat = torch.zeros(10, dtype=F64)
    p1, p2 = nn.Parameter(flat[:4].view(2, 2)), nn.Parameter(flat[4:])  # FSDP-style flat parameters
    with torch.no_grad():
        assert safe_ops.add_(p1, torch.ones(2, 2, dtype=F64)) is p1
        assert safe_ops.accumulate_(p2, [torch.ones(6, dtype=F64)], [2.0]) is p2
        alias = p1.detach()
        assert safe_ops.lerp_(alias, torch.full((2, 2), 3.0, dtype=F64), 0.5) is alias
    torch.testing.assert_close(flat, torch.tensor([2.0] * 4 + [2.0] * 6, dtype=F64))
    assert torch.equal(p1, alias)


@pytest.mark.parametrize("grad_mode", [True, False])
def test_buffers_and_running_stats(grad_mode):
    bn = nn.BatchNorm1d(3).double()
    ref = nn.BatchNorm1d(3).double()
    x = torch.randn(16, 3, dtype=F64, requires_grad=True)
    with torch.set_grad_enabled(grad_mode):
        for m, update in ((bn, safe_ops.lerp_), (ref, torch.Tensor.lerp_)):
            batch_mean = x.detach().mean(0)
            assert update(m.running_mean, batch_mean, 0.1) is m.running_mean
        assert safe_ops.add_(bn.running_var, ref.running_var, alpha=-0.5) is bn.running_var
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, torch.full((3,), 0.5, dtype=F64))


def test_slice_of_an_unsaved_buffer_written_in_a_loop_in_grad_mode():
    results = []
    for update in (lambda t, o: safe_ops.add_(t, o, alpha=2), lambda t, o: t.add_(o, alpha=2)):
        torch.manual_seed(0)
        x = _leaf(4, 3)
        buf = torch.zeros(4, 3, dtype=F64)
        for i in range(4):
            row = buf[i]
            assert update(row, x[i] * (i + 1)) is row
        loss = (buf * buf).sum()
        results.append((buf.detach().clone(), torch.autograd.grad(loss, [x])[0], type(buf.grad_fn).__name__))
    (buf, grad, node), (ref_buf, ref_grad, ref_node) = results
    torch.testing.assert_close(buf, ref_buf)
    torch.testing.assert_close(grad, ref_grad)
    assert node == ref_node == "CopySlices"


def test_a_saved_parameter_is_never_silently_stale_nor_a_wrong_gradient():
    p = nn.Parameter(torch.randn(3, 3, dtype=F64))
    x = torch.randn(2, 3, dtype=F64)
    loss = (x @ p.sin()).sum()  # SinBackward saves p
    with torch.no_grad():
        before = p.detach().clone()
        with pytest.raises(InplaceHazardError, match="pending backward saved it"):
            safe_ops.add_(p, torch.ones(3, 3, dtype=F64))
        assert torch.equal(p, before)
        alias = p.detach()  # shares p's version counter: the write is seen by torch's check at backward
        assert safe_ops.add_(alias, torch.ones(3, 3, dtype=F64)) is alias
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_state_that_a_pending_backward_saved():
    buf = torch.randn(3, dtype=F64)
    w = _leaf(3)
    loss = (w * buf).sum()  # saves buf for w's gradient
    assert safe_ops.inplace_decision(buf) == Decision.COPY_HELD_ELSEWHERE
    out = safe_ops.add_(buf, 1.0)
    assert out is not buf  # grad mode: a copy
    with torch.no_grad():
        assert safe_ops.inplace_decision(buf) == Decision.RAISE_HELD_NO_GRAD
        with pytest.raises(InplaceHazardError, match="a copy would leave the state you are updating stale"):
            safe_ops.add_(buf, 1.0)
    (g,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(g, buf)


@pytest.mark.parametrize("info", OP_TABLE, ids=[i.name for i in OP_TABLE])
def test_every_variant_writes_a_view_of_state_like_torch(info):
    buf = torch.randn(4, 5, dtype=F64)
    ref = buf.clone()
    o = torch.randn(5, dtype=F64)
    args, kwargs = info.update(buf[1], o)
    assert info.inplace(*args, **kwargs) is args[0]
    ref_args, ref_kwargs = info.update(ref[1], o)
    ref[1].copy_(info_reference(info, ref_args, ref_kwargs))
    torch.testing.assert_close(buf, ref)


def info_reference(info, args, kwargs):
    from op_table import reference_update

    return reference_update(info, args, kwargs)


def test_state_whose_result_does_not_fit_raises_under_no_grad_instead_of_going_stale():
    buf = torch.zeros(3, dtype=torch.float32)
    with torch.no_grad():
        with pytest.raises(InplaceHazardError, match="shape or dtype differs"):
            safe_ops.add_(buf, torch.ones(2, 3))  # broadcasts to a bigger shape
        with pytest.raises(RuntimeError, match="can't be cast"):  # torch's error, before anything is written
            safe_ops.add_(torch.zeros(3, dtype=torch.int64), torch.ones(3))
        # A wider dtype is cast into the target, as torch's in-place ops do: the state is updated.
        assert safe_ops.add_(buf, torch.ones(3, dtype=F64)) is buf
    assert torch.equal(buf, torch.ones(3))
    out = safe_ops.add_(buf, torch.ones(2, 3))  # grad mode: the result, rebound by the caller
    assert out.shape == (2, 3) and torch.equal(buf, torch.ones(3))
