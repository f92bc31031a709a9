"""The hazard catalogue: each in-place pattern next to its out-of-place reference, with the node that saves
the value, the op that writes into it, and how plain PyTorch fails on it.

Every pattern is also run through plain PyTorch (test_guard_catalogue.py): it must fail there (the version error
at backward) or give gradients that differ from the out-of-place reference (the silent cases), so each row is a
real hazard. The reference is the same code written out of place, in float64.
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from guard_helpers import DT, XM, XW, Square, X, grads
from torch.torch_version import TorchVersion

import safe_ops

RELU_INPLACE = nn.ReLU(inplace=True)


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


# The op torch lowers `y[index_tensor] = number` to: index_put_ up to 2.14, index_fill_ from 2.15.
SETITEM_INDEX_TENSOR_OP = "index_fill_" if TorchVersion(torch.__version__) >= "2.15" else "index_put_"


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
    Pattern(setitem_index_tensor, setitem_index_tensor_ref, X, "SigmoidBackward0", SETITEM_INDEX_TENSOR_OP, "error"),
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


def reference_grads(p: Pattern):
    return grads(p.ref, p.inputs())
