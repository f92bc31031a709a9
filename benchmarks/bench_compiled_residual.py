"""Scenario 7: a compiled training step whose residual adds are ``safe_ops.add_`` against the same step with
ResNet's ``out += identity``: both ``torch.compile(fullgraph=True)`` (inductor), forward + backward of the
shared small ResNet (tests/models.py), the same loss and gradients (asserted), time per step round-robin.
"""
from __future__ import annotations

import time

import torch

import safe_ops

from harness import Context, main_for, progress, time_interleaved
from models import BasicBlock, SmallResNet

SCENARIO = "7 compiled step, safe_ops.add_ residual"
ORDER = 7


class SafeBasicBlock(BasicBlock):
    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = safe_ops.add_(out, identity)  # the residual through safe_ops
        return self.relu(out)


def _model(safe: bool, width: int) -> SmallResNet:
    torch.manual_seed(0)
    model = SmallResNet(width)
    if safe:
        for block in model.layers:
            block.__class__ = SafeBasicBlock
    return model


def _loss(model):
    def loss(x, y):
        return torch.nn.functional.cross_entropy(model(x), y)

    return loss


def run(ctx: Context) -> None:
    width, batch, size = (8, 4, 16) if ctx.quick else (16, 16, 32)
    params = {"width": width, "batch": batch, "hw": size}
    progress(f"{SCENARIO}: {params}, inductor")
    x, y = torch.randn(batch, 3, size, size, device=ctx.device), torch.randint(0, 10, (batch,), device=ctx.device)
    steps, models, losses = {}, {}, {}
    for name, safe in (("out += identity", False), ("safe_ops.add_(out, identity)", True)):
        model = _model(safe, width).to(ctx.device)
        compiled = torch.compile(_loss(model), fullgraph=True)  # the backward is compiled with it (AOT)

        def step(c=compiled):
            loss = c(x, y)
            loss.backward()
            return loss

        t0 = time.perf_counter()
        losses[name] = step().item()
        progress(f"  {name}: first step (compile) {time.perf_counter() - t0:.1f} s")
        model.zero_grad()
        steps[name], models[name] = step, model
    a, b = models.values()
    assert abs(losses["out += identity"] - losses["safe_ops.add_(out, identity)"]) < 1e-5
    steps["out += identity"]()
    steps["safe_ops.add_(out, identity)"]()  # one step each from zero gradients: the same gradients
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    stats = time_interleaved(steps, device=ctx.device, reps=5 if ctx.quick else 30, max_time_s=20)
    base = stats["out += identity"].median
    for name, st in stats.items():
        ctx.record(SCENARIO, name, "fwd+bwd", time=st, params=params, vs_torch=st.median / base,
                   ref="out += identity")
    ratio = stats["safe_ops.add_(out, identity)"].median / base
    ctx.target("compiled-residual", "compiled step with safe_ops.add_ residuals vs out += identity (time)",
               ratio, 1.05, higher_is_better=False, detail=f"{ratio:.3f}× the out += identity step")


if __name__ == "__main__":
    main_for(run, "compiled_residual")
