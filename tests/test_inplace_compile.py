"""The in-place variants under torch.compile(fullgraph=True): no graph break, the same values and gradients as
eager, and where eager writes state (a buffer, an EMA or optimizer update inside a compiled step) the compiled
code writes it too."""
import pytest
import torch

import safe_ops

from clients import client
from op_table import OP_TABLE, inplace_variants, reference_update

VARIANTS = inplace_variants()
IDS = list(VARIANTS)


def _state_step(safe):
    def step(buf, x):
        out = safe(buf, x)  # buf is state: written in place in eager and compiled alike
        return out.sum()

    return step


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("variant", IDS)
def test_state_update_in_a_compiled_step_writes_the_input(variant, backend):
    torch._dynamo.reset()
    safe, reference = VARIANTS[variant]
    torch.manual_seed(0)
    buf, x = torch.randn(6), torch.randn(6)
    eager_buf = buf.clone()
    compiled = torch.compile(_state_step(safe), fullgraph=True, backend=backend)
    with torch.no_grad():
        expected = reference(eager_buf.clone(), x)
        eager_out = _state_step(safe)(eager_buf, x)
        out = compiled(buf, x)
    torch.testing.assert_close(buf, expected)  # the compiled step wrote its input
    torch.testing.assert_close(buf, eager_buf)
    torch.testing.assert_close(out, eager_out)


@pytest.mark.parametrize("variant", IDS)
def test_graph_tensors_in_a_compiled_forward_and_backward(variant):
    torch._dynamo.reset()
    safe, _ = VARIANTS[variant]

    def f(x, o):
        y = x * 2  # a graph tensor nothing saved
        z = safe(y, o)
        s = x.sigmoid()  # saves its output: eager copies, compiled functionalizes
        s2 = safe(s, o)
        return (z * z).sum() + (s2 * s).sum()

    torch.manual_seed(0)
    x, o = torch.randn(5, dtype=torch.float64, requires_grad=True), torch.randn(5, dtype=torch.float64)
    got = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(x, o), x)[0]
    want = torch.autograd.grad(f(x, o), x)[0]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("info", OP_TABLE, ids=[i.name for i in OP_TABLE])
def test_ema_of_parameters_under_no_grad_in_a_compiled_step(info):
    torch._dynamo.reset()
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    others = [torch.randn(4, 3) for _ in params]
    expected = [reference_update(info, *info.update(p.detach().clone(), o)) for p, o in zip(params, others)]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def update(params, others):
        with torch.no_grad():
            for p, o in zip(params, others):
                args, kwargs = info.update(p, o)
                info.inplace(*args, **kwargs)

    update(params, others)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e)


def test_compiled_torchvision_resnet18_with_safe_ops_residual_adds():
    models = client("torchvision.models")
    resnet = client("torchvision.models.resnet")

    def forward(self, x):  # BasicBlock.forward with `out += identity` as safe_ops.add_
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = safe_ops.add_(out, identity)
        return self.relu(out)

    torch.manual_seed(0)
    eager, compiled_model = models.resnet18(num_classes=10), models.resnet18(num_classes=10)
    compiled_model.load_state_dict(eager.state_dict())
    original = resnet.BasicBlock.forward
    resnet.BasicBlock.forward = forward
    try:
        x = torch.randn(2, 3, 32, 32)
        torch._dynamo.reset()
        compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
        out = compiled(x)
        out.square().mean().backward()
        ref = eager(x)
        ref.square().mean().backward()
    finally:
        resnet.BasicBlock.forward = original
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
    for a, b in zip(compiled_model.buffers(), eager.buffers()):  # BatchNorm running stats written by both
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
