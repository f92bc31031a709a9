"""Scenario 4: a small model's training step, eager against the same step with its accumulations done by
safe_ops: time and peak memory per step, and the same loss and gradients (asserted).

The model: L residual MLP blocks ``h = h + fc2(gelu(fc1(layernorm(h))))`` and a mean-squared-error loss; the
step: forward, backward, an SGD update ``p -= lr * p.grad`` and an EMA of the weights
``ema = d * ema + (1 - d) * p``. Accumulations in the safe_ops step: the residual adds (``safe_ops.add``), the
update (``safe_ops.add_(p, p.grad, alpha=-lr)`` under no_grad, asserted in place) and the EMA
(``safe_ops.lerp_(ema, p, 1 - d)``, asserted in place). Eager: ``h + ...``, ``p.add_(p.grad, alpha=-lr)``,
``ema.mul_(d).add_(p, alpha=1 - d)``.
"""
from __future__ import annotations

import torch
from torch import nn

import safe_ops

from harness import Context, main_for, progress

SCENARIO = "4 training step (residual MLP)"
ORDER = 4
LR = 1e-3
DECAY = 0.999


class Block(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, h):
        return self.fc2(nn.functional.gelu(self.fc1(self.norm(h))))


class Model(nn.Module):
    def __init__(self, d: int, hidden: int, layers: int, safe: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, hidden) for _ in range(layers))
        self.safe = safe

    def forward(self, h):
        for blk in self.blocks:
            h = safe_ops.add(h, blk(h)) if self.safe else h + blk(h)
        return h


def build(device, safe, batch, d, hidden, layers, dtype=torch.float32):
    torch.manual_seed(0)
    model = Model(d, hidden, layers, safe).to(device=device, dtype=dtype)
    ema = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(batch, d, device=device, dtype=dtype)
    y = torch.randn(batch, d, device=device, dtype=dtype)
    return model, ema, x, y


def step(model, ema, x, y, safe):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    grads = []
    with torch.no_grad():
        for p, e in zip(model.parameters(), ema):
            if safe:
                assert safe_ops.add_(p, p.grad, alpha=-LR) is p
                assert safe_ops.lerp_(e, p, 1 - DECAY) is e
            else:
                p.add_(p.grad, alpha=-LR)
                e.mul_(DECAY).add_(p, alpha=1 - DECAY)
            grads.append(p.grad)
            p.grad = None
    return loss.detach(), grads


def make(device, method, mode, batch, d, hidden, layers):
    safe = method.startswith("safe_ops")
    model, ema, x, y = build(device, safe, batch, d, hidden, layers)

    def run():
        return step(model, ema, x, y, safe)

    return run


METHODS = ("eager", "safe_ops")


def check(device, params) -> int:
    """One step of each from the same initial state: same loss and gradients (exact: the residual add
    is the same arithmetic), parameters equal after the update, EMA within rounding (lerp vs mul_+add_)."""
    runs = {}
    for method in METHODS:
        model, ema, x, y = build(device, method == "safe_ops", **params)
        loss, grads = step(model, ema, x, y, method == "safe_ops")
        runs[method] = (loss, grads, [p.detach() for p in model.parameters()], ema)
    (l0, g0, p0, e0), (l1, g1, p1, e1) = runs["eager"], runs["safe_ops"]
    assert torch.equal(l0, l1), f"loss differs: {l0.item()} vs {l1.item()}"
    for a, b in zip(g0, g1):
        assert torch.equal(a, b), "gradients differ"
    differ = 0
    for a, b in zip(p0, p1):  # p + (-lr)·g: torch and safe_ops may round differently (FMA or not)
        torch.testing.assert_close(a, b)
        differ += int((a != b).sum())
    for a, b in zip(e0, e1):
        torch.testing.assert_close(a, b)
    return differ


def run(ctx: Context) -> None:
    if ctx.quick:
        params = {"batch": 64, "d": 64, "hidden": 128, "layers": 2}
    elif ctx.device == "cpu":
        params = {"batch": 1024, "d": 256, "hidden": 1024, "layers": 4}
    else:
        params = {"batch": 8192, "d": 1024, "hidden": 4096, "layers": 8}
    progress(f"{SCENARIO}: {params}")
    differ = check(ctx.device, params)
    nparams = sum(p.numel() for p in Model(params["d"], params["hidden"], params["layers"], False).parameters())
    note = (f"loss and grads bitwise equal (asserted); updated weights equal to float32 rounding ({differ} of "
            f"{nparams} differ in the last bits)")
    progress("  " + note)
    ctx.bench_group(SCENARIO, make, list(METHODS), "step", params, ref="safe_ops",
                    extra={"safe_ops": {"note": note}})
    r = ctx.ratio(SCENARIO, "eager", "safe_ops", "step")
    rm = ctx.ratio(SCENARIO, "safe_ops", "eager", "step", key="peak")
    if r is not None and rm is not None:
        progress(f"  eager / safe_ops step time {r:.2f}x, safe_ops / eager peak memory {rm:.2f}x")

if __name__ == "__main__":
    main_for(run, "model")
