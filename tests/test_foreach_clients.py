"""safe_ops.foreach_<op>_ in real code: EMA code of timm and torch.optim.swa_utils rewritten on the foreach EMA
update, a mixed-precision EMA in one pass, the parameter-shape tables, torch.compile of a state update."""
import math

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import safe_ops

from clients import client
from models import SmallResNet
from param_shapes import MODELS


class ModelEmaV3Foreach:
    """timm's ModelEmaV3 (timm/utils/model_ema.py) foreach branches, verbatim but for the lerp call (timm is not
    installed here: it pulls torchvision)."""

    def __init__(self, module, lerp):
        import copy

        self.module = copy.deepcopy(module)
        self.lerp = lerp

    @torch.no_grad()
    def apply_update_no_buffers_(self, model, decay: float):
        ema_params = tuple(self.module.parameters())
        model_params = tuple(model.parameters())
        self.lerp(ema_params, model_params, 1.0 - decay)
        for ema_b, model_b in zip(self.module.buffers(), model.buffers()):
            ema_b.detach().copy_(model_b)

    @torch.no_grad()
    def apply_update_(self, model, decay: float):
        ema_lerp_values = []
        model_lerp_values = []
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.is_floating_point():
                ema_lerp_values.append(ema_v)
                model_lerp_values.append(model_v)
            else:
                ema_v.copy_(model_v)
        return self.lerp(ema_lerp_values, model_lerp_values, 1.0 - decay)


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 3, 16, 16)).sum().backward()
        opt.step()
        yield


def _three_emas(model):
    """timm's foreach EMA of `model` over safe_ops.foreach_lerp_, torch._foreach_lerp_ and safe_ops.lerp_ per member."""
    return (ModelEmaV3Foreach(model, safe_ops.foreach_lerp_), ModelEmaV3Foreach(model, torch._foreach_lerp_),
            ModelEmaV3Foreach(model, lambda e, m, w: [safe_ops.lerp_(a, b, w) for a, b in zip(e, m)]))


def test_timm_model_ema_v3_on_foreach_lerp_matches_torch_foreach():
    torch.manual_seed(0)
    model = SmallResNet()
    ours, theirs, per_tensor = _three_emas(model)
    for _ in _train_steps(model):
        for ema in (ours, theirs, per_tensor):
            ema.apply_update_no_buffers_(model, 0.9)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(),
                       per_tensor.module.state_dict().values()):
        assert torch.equal(a, c)  # bitwise the per-tensor op
        torch.testing.assert_close(a, b)


def test_timm_state_dict_update_matches_per_tensor_and_torch():
    """timm's default branch walks state_dict() values, detached aliases of the EMA's tensors: per member the
    same results as safe_ops.lerp_ gives them, and where those write in place the EMA is torch's."""
    torch.manual_seed(0)
    model = SmallResNet()
    ours, theirs, per_tensor = _three_emas(model)
    for _ in _train_steps(model):
        results = ours.apply_update_(model, 0.9)
        theirs.apply_update_(model, 0.9)
        expected = per_tensor.apply_update_(model, 0.9)
        for r, e in zip(results, expected):
            assert torch.equal(r, e)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(),
                       per_tensor.module.state_dict().values()):
        assert torch.equal(a, c)
        torch.testing.assert_close(a, b)


def test_averaged_model_multi_avg_fn_rewritten_on_foreach_lerp_matches_torch():
    def safe_ema_multi_avg_fn(decay):  # torch.optim.swa_utils.get_ema_multi_avg_fn, on safe_ops
        @torch.no_grad()
        def ema_update(ema_param_list, current_param_list, _):
            if torch.is_floating_point(ema_param_list[0]):
                safe_ops.foreach_lerp_(ema_param_list, current_param_list, 1 - decay)
            else:
                for p_ema, p_model in zip(ema_param_list, current_param_list):
                    p_ema.copy_(p_ema * decay + p_model * (1 - decay))
        return ema_update

    torch.manual_seed(0)
    model = SmallResNet()
    ours = AveragedModel(model, multi_avg_fn=safe_ema_multi_avg_fn(0.9), use_buffers=True)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in _train_steps(model):
        ours.update_parameters(model)
        theirs.update_parameters(model)
    for a, b in zip(ours.module.state_dict().values(), theirs.module.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(next(ours.module.parameters()), next(model.parameters()))


def test_mixed_fp32_ema_of_a_bf16_model_in_one_call():
    """timm falls back to _foreach_mul_ + _foreach_add_ here (lerp needs one dtype): one pass, rounded once."""
    torch.manual_seed(0)
    model = [torch.randn(s).bfloat16() for s in MODELS["mobilenet_v3_small"]()[:20]]
    ema = [p.float() for p in model]
    two_pass = [e.clone() for e in ema]
    torch._foreach_mul_(two_pass, 0.99)
    torch._foreach_add_(two_pass, model, alpha=0.01)
    safe_ops.foreach_lerp_(ema, model, 0.01)
    for a, b in zip(ema, two_pass):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_parameter_shape_tables_have_the_models_totals():
    totals = {name: (len(f()), sum(math.prod(s) for s in f())) for name, f in MODELS.items()}
    assert totals == {"mobilenet_v3_small": (142, 2542856), "resnet50": (161, 25557032),
                      "gpt2_small": (148, 124439808)}


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_fullgraph_state_update_writes_the_inputs_like_eager(backend):
    """As the per-tensor variants under torch.compile(fullgraph=True): no graph break, state written."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    ema = [torch.randn(4), torch.randn(2, 3), torch.randn(())]
    params = [torch.randn(t.shape) for t in ema]
    expected = [safe_ops.lerp(e, p, 0.25) for e, p in zip(ema, params)]

    def step(ema, params):
        out = safe_ops.foreach_lerp_(ema, params, 0.25)
        return sum(o.sum() for o in out)

    with torch.no_grad():
        total = torch.compile(step, fullgraph=True, backend=backend)(ema, params)
    for e, want in zip(ema, expected):
        torch.testing.assert_close(e, want)
    torch.testing.assert_close(total, sum(w.sum() for w in expected))


def test_compiled_grad_mode_member_gets_its_gradient():
    torch._dynamo.reset()
    x = torch.randn(4, requires_grad=True)
    end = torch.randn(4)

    def f(x, end):
        t = x * 2
        return safe_ops.foreach_lerp_([t, torch.zeros(4)], [end, end], 0.25)[0].sum()

    torch.compile(f, fullgraph=True, backend="aot_eager")(x, end).backward()
    torch.testing.assert_close(x.grad, torch.full((4,), 1.5))


def test_real_timm_model_ema_v3_foreach_branch_on_foreach_lerp_():
    """timm's own ModelEmaV3 (foreach=True): its _foreach_lerp_ over state_dict() values on safe_ops.foreach_lerp_
    gives the EMA torch._foreach_lerp_ gives, and the EMA module really changes."""
    timm_ema = client("timm.utils.model_ema")
    torch.manual_seed(0)
    model = SmallResNet()
    ours = timm_ema.ModelEmaV3(model, decay=0.9, foreach=True)
    theirs = timm_ema.ModelEmaV3(model, decay=0.9, foreach=True)
    ours._foreach_lerp_ = lambda ema_values, model_values, weight: safe_ops.foreach_lerp_(ema_values, model_values,
                                                                                         weight)
    before = [v.clone() for v in ours.module.state_dict().values()]
    for step, _ in enumerate(_train_steps(model)):
        ours.update(model, step=step)
        theirs.update(model, step=step)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(), before):
        torch.testing.assert_close(a, b)
        if a.is_floating_point() and a.numel() > 1:
            assert not torch.equal(a, c)
