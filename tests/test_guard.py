"""safe_ops.guard(): the in-place hazard catalogue under raise / warn / copy, the cases PyTorch misses, the
no-false-alarm list, two small models, record release, threads, nesting, user hooks and torch.compile.

Every catalogue pattern is also run through plain PyTorch: it must fail there (the version error at backward)
or give gradients that differ from the out-of-place reference (the silent cases), so each row is a real hazard.
The reference is the same code written out of place, in float64.
"""
import gc
import inspect
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import safe_ops
from safe_ops import InplaceHazardError

guard_module = sys.modules["safe_ops.guard"]
InplaceHazardWarning = safe_ops.guard.InplaceHazardWarning
DT = torch.float64
RELU_INPLACE = nn.ReLU(inplace=True)


@pytest.fixture(autouse=True)
def _fresh_guard_state():
    guard_module._warned_lines.clear()
    guard_module._said_compiled = False
    yield
    assert torch._C._len_torch_dispatch_stack() == 0, "a guard left its dispatch mode behind"
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None, "a guard left its hooks behind"


def live_records() -> int:
    """Records alive once garbage is collected (graphs kept by tracebacks of caught errors die there)."""
    gc.collect()
    return safe_ops.guard.live_records()


def leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return (torch.rand(*shape, generator=g, dtype=DT) + 0.5).requires_grad_()


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return 2 * a * grad


# ---- the catalogue: each in-place pattern next to its out-of-place reference ---------------------------------
# `# SAVE` marks the line whose op saves the value, `# WRITE` the line that writes into it.


def sigmoid_out_mul_(x):
    y = x.sigmoid()  # SAVE
    y.mul_(2)  # WRITE
    return y.sum()


def sigmoid_out_mul_ref(x):
    return (x.sigmoid() * 2).sum()


def exp_out_add_(x):
    y = x.exp()  # SAVE
    y.add_(1)  # WRITE
    return y.sum()


def exp_out_add_ref(x):
    return (x.exp() + 1).sum()


def tanh_out_iadd(x):
    y = torch.tanh(x)  # SAVE
    y += 1  # WRITE
    return (y * y).sum()


def tanh_out_iadd_ref(x):
    y = torch.tanh(x) + 1
    return (y * y).sum()


def softmax_out_div_(x):
    y = torch.softmax(x, dim=-1)  # SAVE
    y.div_(3)  # WRITE
    return (y * y).sum()


def softmax_out_div_ref(x):
    y = torch.softmax(x, dim=-1) / 3
    return (y * y).sum()


def relu_out_mul_(x):
    y = torch.relu(x - 1)  # SAVE
    y.mul_(3)  # WRITE
    return (y * y).sum()


def relu_out_mul_ref(x):
    y = torch.relu(x - 1) * 3
    return (y * y).sum()


def mul_input_add_(x, w):
    a = x * 1
    y = a * w  # SAVE
    a.add_(1)  # WRITE
    return y.sum() + (a * a).sum()


def mul_input_add_ref(x, w):
    a = x * 1
    y = a * w
    a = a + 1
    return y.sum() + (a * a).sum()


def matmul_input_mul_(x, m):
    a = x * 1
    y = a @ m  # SAVE
    a.mul_(2)  # WRITE
    return y.sum() + a.sum()


def matmul_input_mul_ref(x, m):
    a = x * 1
    y = a @ m
    return y.sum() + (a * 2).sum()


def div_divisor_add_(x, w):
    b = w * 1
    y = x / b  # SAVE
    b.add_(1)  # WRITE
    return y.sum() + b.sum()


def div_divisor_add_ref(x, w):
    b = w * 1
    y = x / b
    return y.sum() + (b + 1).sum()


def view_of_output(x):
    y = x.exp()  # SAVE
    y[0].mul_(2)  # WRITE
    return (y * y).sum()


def view_of_output_ref(x):
    y = x.exp()
    y = torch.cat([y[:1] * 2, y[1:]])
    return (y * y).sum()


def slice_of_input(x, w):
    a = x * 1
    y = a * w  # SAVE
    a[:, 1:].zero_()  # WRITE
    return y.sum() + (a * a).sum()


def slice_of_input_ref(x, w):
    a = x * 1
    y = a * w
    a = torch.cat([a[:, :1], torch.zeros_like(a[:, 1:])], dim=1)
    return y.sum() + (a * a).sum()


def unbind_outputs(x):
    a = x * 1
    p, q, _ = a.unbind(0)
    y = p * q  # SAVE
    a.add_(1)  # WRITE
    return y.sum() + (a * a).sum()


def unbind_outputs_ref(x):
    a = x * 1
    p, q, _ = a.unbind(0)
    y = p * q
    a = a + 1
    return y.sum() + (a * a).sum()


def split_outputs(x, w):
    a = x * 1
    p, _ = a.split([1, 2], dim=0)
    y = p * w[:1]  # SAVE
    a[0] *= 3  # WRITE
    return y.sum() + (a * a).sum()


def split_outputs_ref(x, w):
    a = x * 1
    p, _ = a.split([1, 2], dim=0)
    y = p * w[:1]
    a = torch.cat([a[:1] * 3, a[1:]])
    return y.sum() + (a * a).sum()


def partial_overlap(x, w):
    a = x * 1
    y = a[:, :3] * w[:, :3]  # SAVE
    a[:, 2:].zero_()  # WRITE
    return y.sum() + (a * a).sum()


def partial_overlap_ref(x, w):
    a = x * 1
    y = a[:, :3] * w[:, :3]
    a = torch.cat([a[:, :2], torch.zeros_like(a[:, 2:])], dim=1)
    return y.sum() + (a * a).sum()


def strided_overlap(x, w):
    a = x * 1
    y = a[:, ::2] * w[:, ::2]  # SAVE
    a[:, 2].fill_(0.5)  # WRITE
    return y.sum() + (a * a).sum()


def strided_overlap_ref(x, w):
    a = x * 1
    y = a[:, ::2] * w[:, ::2]
    a = torch.cat([a[:, :2], torch.full_like(a[:, 2:3], 0.5), a[:, 3:]], dim=1)
    return y.sum() + (a * a).sum()


def data_mul_(x):
    y = x.sigmoid()  # SAVE
    y.data.mul_(2)  # WRITE
    return y.sum()


def data_write_ref(x, *_):  # .data writes are invisible to autograd: the gradient is that of the unwritten graph
    return x.sigmoid().sum()


def data_setitem(x):
    y = x.sigmoid()  # SAVE
    y.data[1] = 0.0  # WRITE
    return y.sum()


def detach_alias_mul_(x):
    y = x.sigmoid()  # SAVE
    y.detach().mul_(2)  # WRITE
    return y.sum()


def dtype_view_zero_(x):
    y = x.sigmoid()  # SAVE
    y.detach().view(torch.int64).zero_()  # WRITE
    return y.sum()


def hooks_active(x):
    # (A pack hook returning `t` itself would keep the graph alive through a reference cycle: detach.)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
        y = x.tanh()  # SAVE
        y.add_(1)  # WRITE
    return (y * y).sum()


def hooks_active_ref(x):
    y = x.tanh() + 1
    return (y * y).sum()


def two_graphs(x, w):
    a = x * 1
    y1 = a * w  # SAVE
    y2 = a.sin()
    a.mul_(2)  # WRITE
    return y1.sum() + y2.sum()


def two_graphs_ref(x, w):
    a = x * 1
    return (a * w).sum() + a.sin().sum()


def retain_graph_second_backward(x):
    y = x.exp()  # SAVE
    loss = y.sum()
    loss.backward(retain_graph=True)
    y.mul_(2)  # WRITE
    return loss


def retain_graph_second_backward_ref(x):
    loss = x.exp().sum()
    loss.backward(retain_graph=True)
    return loss


def setitem_scalar(x):
    y = x.sigmoid()  # SAVE
    y[1] = 0.0  # WRITE
    return (y * y).sum()


def setitem_scalar_ref(x):
    y = x.sigmoid().index_fill(0, torch.tensor([1]), 0.0)
    return (y * y).sum()


def setitem_index_tensor(x):
    y = x.sigmoid()  # SAVE
    y[torch.tensor([0, 2])] = 1.0  # WRITE
    return (y * y).sum()


def setitem_index_tensor_ref(x):
    y = x.sigmoid().index_fill(0, torch.tensor([0, 2]), 1.0)
    return (y * y).sum()


def copy_into_output(x, w):
    y = x.tanh()  # SAVE
    y.copy_(w)  # WRITE
    return (y * y).sum()


def copy_into_output_ref(x, w):
    y = w + 0 * x.tanh()
    return (y * y).sum()


def out_under_no_grad(x):
    y = x.exp()  # SAVE
    with torch.no_grad():
        torch.mul(x, 2, out=y)  # WRITE
    return y.sum()


def no_write_ref(x, *_):
    return x.exp().sum()


def out_into_saved_constant(x, w):
    c = w.detach() * 1
    y = x * c  # SAVE
    torch.add(w.detach(), 1, out=c)  # WRITE
    return y.sum()


def out_into_saved_constant_ref(x, w):
    return (x * w.detach()).sum()


def relu_inplace_functional(x):
    y = F.relu(x - 1.2, inplace=True)  # safe: sub's output is saved by no one
    z = torch.sigmoid(x)  # SAVE
    z = F.relu(z - 0.6, inplace=False)
    z = F.relu(torch.sigmoid(z), inplace=True)  # SAVE WRITE
    return y.sum() + (z * z).sum()


def relu_inplace_functional_ref(x):
    z = F.relu(torch.sigmoid(x) - 0.6)
    return F.relu(x - 1.2).sum() + (F.relu(torch.sigmoid(z)) ** 2).sum()


def relu_inplace_module(x):
    y = x.tanh()  # SAVE
    y = RELU_INPLACE(y)  # WRITE
    return (y * y).sum()


def relu_inplace_module_ref(x):
    y = F.relu(x.tanh())
    return (y * y).sum()


def self_operand(x):
    a = x * 1
    a.mul_(a)  # SAVE WRITE
    return a.sum()


def self_operand_ref(x):
    a = x * 1
    return (a * a).sum()


def addcmul_into_output(x, w):
    y = x.exp()  # SAVE
    y.addcmul_(w, w, value=0.5)  # WRITE
    return (y * y).sum()


def addcmul_into_output_ref(x, w):
    y = x.exp() + 0.5 * w * w
    return (y * y).sum()


def masked_fill_output(x):
    y = x.exp()  # SAVE
    y.masked_fill_(x.detach() > 1.0, 0.0)  # WRITE
    return (y * y).sum()


def masked_fill_output_ref(x):
    y = x.exp().masked_fill(x.detach() > 1.0, 0.0)
    return (y * y).sum()


def saved_leaf_update(x, w):
    y = x * w  # SAVE
    with torch.no_grad():
        w.add_(1)  # WRITE
    return y.sum()


def saved_leaf_update_ref(x, w):
    return (x * w).sum()


def foreach_mul_(x):
    y1 = x.exp()  # SAVE
    y2 = x.sin()
    torch._foreach_mul_([y2, y1], 2.0)  # WRITE
    return (y1 * y1).sum() + y2.sum()


def foreach_mul_ref(x):
    y1 = x.exp() * 2
    return (y1 * y1).sum() + (x.sin() * 2).sum()


def safe_ops_custom_op(x, w):
    t1 = x * 1
    y = safe_ops.addcmul(torch.zeros(3, 4, dtype=DT), t1, w)  # SAVE
    t1.add_(1)  # WRITE
    return y.sum() + t1.sum()


def safe_ops_custom_op_ref(x, w):
    t1 = x * 1
    y = torch.addcmul(torch.zeros(3, 4, dtype=DT), t1, w)
    return y.sum() + (t1 + 1).sum()


def python_function(x):
    a = x * 1
    y = Square.apply(a)  # SAVE
    a.mul_(3)  # WRITE
    return y.sum() + a.sum()


def python_function_ref(x):
    a = x * 1
    return (a * a).sum() + (a * 3).sum()


def exp_inplace_then_write(x):
    a = x * 1
    a.exp_()  # SAVE
    a.add_(1)  # WRITE
    return (a * a).sum()


def exp_inplace_then_write_ref(x):
    a = (x * 1).exp() + 1
    return (a * a).sum()


@dataclass
class Pattern:
    fn: Callable
    ref: Callable
    inputs: Callable  # () -> tuple of float64 leaves
    node: str  # the saving node named in the report
    op: str  # the writing op named in the report
    torch_fails: str  # "error": PyTorch's version error at backward; "silent": wrong gradients, no error

    @property
    def name(self) -> str:
        return self.fn.__name__


def X():
    return (leaf(3, 4),)


def XW():
    return leaf(3, 4), leaf(3, 4, seed=1)


def XM():
    return leaf(3, 4), leaf(4, 5, seed=2)


CATALOGUE = [
    Pattern(sigmoid_out_mul_, sigmoid_out_mul_ref, X, "SigmoidBackward0", "mul_", "error"),
    Pattern(exp_out_add_, exp_out_add_ref, X, "ExpBackward0", "add_", "error"),
    Pattern(tanh_out_iadd, tanh_out_iadd_ref, X, "TanhBackward0", "add_", "error"),
    Pattern(softmax_out_div_, softmax_out_div_ref, X, "SoftmaxBackward0", "div_", "error"),
    Pattern(relu_out_mul_, relu_out_mul_ref, X, "ReluBackward0", "mul_", "error"),
    Pattern(mul_input_add_, mul_input_add_ref, XW, "MulBackward0", "add_", "error"),
    Pattern(matmul_input_mul_, matmul_input_mul_ref, XM, "MmBackward0", "mul_", "error"),
    Pattern(div_divisor_add_, div_divisor_add_ref, XW, "DivBackward0", "add_", "error"),
    Pattern(view_of_output, view_of_output_ref, X, "ExpBackward0", "mul_", "error"),
    Pattern(slice_of_input, slice_of_input_ref, XW, "MulBackward0", "zero_", "error"),
    Pattern(unbind_outputs, unbind_outputs_ref, X, "MulBackward0", "add_", "error"),
    Pattern(split_outputs, split_outputs_ref, XW, "MulBackward0", "mul_", "error"),
    Pattern(partial_overlap, partial_overlap_ref, XW, "MulBackward0", "zero_", "error"),
    Pattern(strided_overlap, strided_overlap_ref, XW, "MulBackward0", "fill_", "error"),
    Pattern(data_mul_, data_write_ref, X, "SigmoidBackward0", "mul_", "silent"),
    Pattern(data_setitem, data_write_ref, X, "SigmoidBackward0", "fill_", "silent"),
    Pattern(detach_alias_mul_, data_write_ref, X, "SigmoidBackward0", "mul_", "error"),
    Pattern(dtype_view_zero_, data_write_ref, X, "SigmoidBackward0", "zero_", "error"),
    Pattern(hooks_active, hooks_active_ref, X, "TanhBackward0", "add_", "silent"),
    Pattern(two_graphs, two_graphs_ref, XW, "MulBackward0", "mul_", "error"),
    Pattern(retain_graph_second_backward, retain_graph_second_backward_ref, X, "ExpBackward0", "mul_", "error"),
    Pattern(setitem_scalar, setitem_scalar_ref, X, "SigmoidBackward0", "fill_", "error"),
    Pattern(setitem_index_tensor, setitem_index_tensor_ref, X, "SigmoidBackward0", "index_put_", "error"),
    Pattern(copy_into_output, copy_into_output_ref, XW, "TanhBackward0", "copy_", "error"),
    Pattern(out_under_no_grad, no_write_ref, X, "ExpBackward0", "aten.mul.out", "error"),
    Pattern(out_into_saved_constant, out_into_saved_constant_ref, XW, "MulBackward0", "aten.add.out", "error"),
    Pattern(relu_inplace_functional, relu_inplace_functional_ref, X, "SigmoidBackward0", "relu_", "error"),
    Pattern(relu_inplace_module, relu_inplace_module_ref, X, "TanhBackward0", "relu_", "error"),
    Pattern(self_operand, self_operand_ref, X, "aten.mul_.Tensor", "mul_", "error"),
    Pattern(addcmul_into_output, addcmul_into_output_ref, XW, "ExpBackward0", "addcmul_", "error"),
    Pattern(masked_fill_output, masked_fill_output_ref, X, "ExpBackward0", "masked_fill_", "error"),
    Pattern(saved_leaf_update, saved_leaf_update_ref, XW, "MulBackward0", "add_", "error"),
    Pattern(foreach_mul_, foreach_mul_ref, X, "ExpBackward0", "_foreach_mul_", "error"),
    Pattern(safe_ops_custom_op, safe_ops_custom_op_ref, XW, "safe_ops::AddcmulBackward", "add_", "error"),
    Pattern(python_function, python_function_ref, X, "SquareBackward", "mul_", "error"),
    Pattern(exp_inplace_then_write, exp_inplace_then_write_ref, X, "ExpBackward", "add_", "error"),
]
IDS = [p.name for p in CATALOGUE]


def marked_line(fn, marker: str) -> int:
    """The line of ``fn`` whose comment carries ``marker`` (the last one when several do)."""
    lines, start = inspect.getsourcelines(fn)
    found = [start + i for i, text in enumerate(lines) if "#" in text and marker in text.split("#", 1)[1].split()]
    assert found, (fn.__name__, marker)
    return found[-1]


def site(fn, marker: str) -> str:
    return f"{fn.__code__.co_filename}:{marked_line(fn, marker)}"


def grads(pattern_fn, inputs, context=None):
    """Run the pattern (inside ``context`` if given), backward outside it; the inputs' gradients."""
    if context is None:
        loss = pattern_fn(*inputs)
    else:
        with context:
            loss = pattern_fn(*inputs)
    loss.backward()
    return [torch.zeros_like(t) if t.grad is None else t.grad for t in inputs]


def reference_grads(p: Pattern):
    return grads(p.ref, p.inputs())


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


# ---- what PyTorch misses -------------------------------------------------------------------------------------


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
    assert not guard_module.hooks_are_only_guards()
    with safe_ops.guard():
        assert guard_module.hooks_are_only_guards()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            assert not guard_module.hooks_are_only_guards()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        with safe_ops.guard():
            assert not guard_module.hooks_are_only_guards()


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


# ---- no false alarms -----------------------------------------------------------------------------------------


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
    records = sys.modules["safe_ops._guard_records"]
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
        got = records.elements_overlap(records.extent(a), records.extent(b))
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


# ---- models ----------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # ResNet's in-place residual on a BatchNorm output
        return self.relu(out)


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TransformerBlock(nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=0.1, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1, inplace=True)

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + self.drop(a)
        h = F.gelu(self.fc1(self.ln2(x)))
        h.mul_(1.0)  # gelu saves its input: writing its output is safe
        h = self.fc2(h)
        h += x  # residual written into fc2's output (saved by no one)
        return h


class GatedBlock(nn.Module):
    """Writes into a sigmoid's output: a real hazard that copy mode repairs."""

    def __init__(self, d=16):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x, inplace=True):
        gate = torch.sigmoid(self.fc(x))
        if inplace:
            gate.mul_(2)
        else:
            gate = gate * 2
        return gate * x


def _train(model_fn, data_fn, steps, context_fn, seed=0, **forward_kwargs):
    torch.manual_seed(seed)
    model = model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        torch.manual_seed(100 + step)
        data = data_fn()
        with context_fn():
            loss = model(data, **forward_kwargs).pow(2).mean()
        loss.backward()
        history.append([p.grad.clone() for p in model.parameters()])
        opt.step()
        opt.zero_grad()
    return history


MODELS = [
    (SmallResNet, lambda: torch.randn(2, 3, 8, 8)),
    (TransformerBlock, lambda: torch.randn(2, 5, 16)),
]


@pytest.mark.parametrize("model_fn,data_fn", MODELS, ids=["resnet", "transformer"])
def test_models_train_under_raise_and_copy(model_fn, data_fn):
    plain = _train(model_fn, data_fn, 3, torch.enable_grad)
    guards = []

    def make(mode):
        def context():
            guards.append(safe_ops.guard(mode))
            return guards[-1]
        return context

    for mode in ("raise", "copy"):
        got = _train(model_fn, data_fn, 3, make(mode))
        for step_a, step_b in zip(got, plain):
            for a, b in zip(step_a, step_b):
                assert torch.equal(a, b)
    assert all(g.stats.hazards == 0 and g.stats.copies == 0 and g.stats.saved > 0 for g in guards)


def test_hazardous_model_copy_matches_out_of_place():
    data = lambda: torch.randn(4, 16, dtype=DT)  # noqa: E731
    model = lambda: GatedBlock().double()  # noqa: E731
    reference = _train(model, data, 3, torch.enable_grad, inplace=False)
    with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
        _train(model, data, 1, lambda: safe_ops.guard("raise"))
    g = safe_ops.guard("copy")
    got = _train(model, data, 3, lambda: g)
    for step_a, step_b in zip(got, reference):
        for a, b in zip(step_a, step_b):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert g.stats.copies == 3 and g.stats.bytes == 3 * 4 * 16 * 8


# ---- lifetime -------------------------------------------------------------------------------------------------


def test_records_released_over_10000_steps():
    import tracemalloc

    x = leaf(8)
    w = leaf(8, seed=3)
    peak_records = 0
    tracemalloc.start()
    try:
        for step in range(10_000):
            with safe_ops.guard():
                loss = ((x * w).sigmoid() * x).sum()
            peak_records = max(peak_records, safe_ops.guard.live_records())
            loss.backward()
            if step == 100:
                base, _ = tracemalloc.get_traced_memory()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_records <= 5  # x*w saves 2, sigmoid 1, *x 2
    assert live_records() == 0
    assert not sys.modules["safe_ops._guard_records"]._live
    assert end - base < 256 * 1024, f"python memory grew by {end - base} bytes"


def test_records_released_when_graph_dropped_without_backward():
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.exp() * x.sigmoid()
        assert safe_ops.guard.live_records() >= 2
    del y
    assert live_records() == 0


def test_nothing_copied_when_nothing_written():
    x, w = XW()
    with safe_ops.guard("copy") as g:
        loss = ((x * w).sigmoid() @ w.t()).exp().sum()
    loss.backward()
    assert g.stats.saved >= 4 and g.stats.copies == 0 and g.stats.bytes == 0


# ---- nesting, threads, errors, compile -------------------------------------------------------------------------


def test_nested_guards_innermost_mode_wins_and_stats_add_up():
    x = leaf(3, 4)
    with safe_ops.guard("copy") as outer:
        y = x.sigmoid()
        with pytest.raises(InplaceHazardError):
            with safe_ops.guard("raise") as inner:
                y.mul_(2)
        y.mul_(2)  # the outer guard copies
        z = x.exp()
        with safe_ops.guard("copy") as inner2:
            z.add_(1)
    (y.sum() + z.sum()).backward()
    s = x.detach().sigmoid()
    torch.testing.assert_close(x.grad, 2 * s * (1 - s) + x.detach().exp())
    assert inner.stats.hazards == 1 and inner.stats.copies == 0
    assert inner2.stats.copies == 1 and outer.stats.copies == 2 and outer.stats.hazards == 3


def test_guard_cannot_be_reentered_and_rejects_unknown_modes():
    g = safe_ops.guard()
    with g:
        with pytest.raises(RuntimeError, match="already active"):
            g.__enter__()
    with pytest.raises(ValueError, match="mode"):
        safe_ops.guard("ignore")


def test_exception_inside_guard_uninstalls_it():
    with pytest.raises(ZeroDivisionError):
        with safe_ops.guard():
            1 / 0
    # the autouse fixture checks that no mode or hooks are left behind


def test_state_is_per_thread():
    """A guard in one thread neither checks nor records another thread's ops."""
    entered, done = threading.Event(), threading.Event()
    errors = []

    def guarded():
        with safe_ops.guard():
            entered.set()
            done.wait(10)

    def unguarded():
        try:
            entered.wait(10)
            x = leaf(3, 4)
            y = x.sigmoid()
            y.mul_(2)  # not checked here: PyTorch's own check still applies at backward
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()
            assert live_records() == 0
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    threads = [threading.Thread(target=guarded), threading.Thread(target=unguarded)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors


def test_threads_each_with_their_own_guard():
    results = {}

    def worker(index, mode):
        try:
            with safe_ops.guard(mode) as g:
                for _ in range(20):
                    x = leaf(3, 4, seed=index)
                    if mode == "raise":
                        with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
                            sigmoid_out_mul_(x)
                    else:
                        loss = sigmoid_out_mul_(x)
                        loss.backward()
                        s = x.detach().sigmoid()
                        torch.testing.assert_close(x.grad, 2 * s * (1 - s))
            results[index] = g.stats
        except BaseException as error:  # pragma: no cover - reported below
            results[index] = error

    modes = ["raise", "copy", "raise", "copy"]
    threads = [threading.Thread(target=worker, args=(i, m)) for i, m in enumerate(modes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, mode in enumerate(modes):
        stats = results[i]
        assert isinstance(stats, guard_module.GuardStats), stats
        assert stats.hazards == 20 and stats.copies == (20 if mode == "copy" else 0)


def test_write_from_another_guarded_thread_into_a_saved_tensor():
    """Records are shared: a guarded thread's write into a tensor another thread's graph saved is caught."""
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.sigmoid()
    caught = []

    def writer():
        with safe_ops.guard():
            try:
                y.mul_(2)
            except InplaceHazardError as error:
                caught.append(error)

    t = threading.Thread(target=writer)
    t.start()
    t.join(10)
    assert caught and "SigmoidBackward0" in str(caught[0])
    y.sum().backward()


def test_compile_says_once_that_compiled_regions_are_not_checked():
    def f(x):
        return (x.sigmoid() * x).sum()

    compiled = torch.compile(f, backend="aot_eager")
    x = leaf(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with safe_ops.guard():
            loss = compiled(x) + compiled(x)
    loss.backward()
    xr = leaf(3, 4)
    (2 * f(xr)).backward()
    torch.testing.assert_close(x.grad, xr.grad)
    said = [w for w in caught if "regions are not checked" in str(w.message)]
    compiled_ran = loss.grad_fn is not None and any(
        "CompiledFunction" in (n.name() if n is not None else "") for n, _ in loss.grad_fn.next_functions)
    if compiled_ran:
        assert len(said) == 1
    else:  # a torch whose dynamo skips frames under a dispatch mode runs f eagerly, and checks it
        assert not said


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_raise_copy_and_backward_on_the_device_thread():
    x = torch.rand(64, 32, device="cuda", requires_grad=True)
    with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
        with safe_ops.guard():
            y = x.sigmoid()
            y[3:5].mul_(2)
    with safe_ops.guard("copy") as g:
        y = x.sigmoid()
        y[3:5].mul_(2)
        y.sum().backward()  # CUDA backward runs on autograd's device thread, inside the guard
    s = x.detach().sigmoid()
    scale = torch.ones_like(s)
    scale[3:5] = 2
    torch.testing.assert_close(x.grad, scale * s * (1 - s))
    assert g.stats.copies == 1 and g.stats.bytes == 64 * 32 * 4
    assert live_records() == 0


def test_safe_add_stays_in_place_under_the_guard_and_copies_a_saved_value():
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)
    with safe_ops.guard("raise"):
        total = torch.zeros(8, dtype=torch.float64)
        ptr = total.data_ptr()
        for i in range(4):
            total = safe_ops.add_(total, x, alpha=i)
        assert total.data_ptr() == ptr  # the guard's hooks alone do not force copies
        y = x.sigmoid()
        z = safe_ops.add_(y, 1.0)  # sigmoid saved y: still a copy, and no alarm
        assert z is not y
        (total.sum() + (z * y).sum()).backward()
    expected = 6 + (y.detach() * (1 - y.detach())) * (2 * y.detach() + 1)
    torch.testing.assert_close(x.grad, expected)
