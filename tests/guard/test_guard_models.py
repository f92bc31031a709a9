"""Small models (tests/models.py) train under raise and copy exactly as without the guard; a hazardous model
under copy matches its out-of-place twin.
"""
import pytest
import torch
from guard_helpers import DT

import safe_ops
from safe_ops import InplaceHazardError

from models import GatedBlock, SmallResNet, TransformerBlock


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
