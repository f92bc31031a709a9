"""Helpers of the guard tests: float64 leaves, the gradients of a pattern run under a context, the source line
a `# MARKER` comment marks, and records alive after garbage collection."""
import gc
import inspect

import torch

import safe_ops

DT = torch.float64


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


def X():
    return (leaf(3, 4),)


def XW():
    return leaf(3, 4), leaf(3, 4, seed=1)


def XM():
    return leaf(3, 4), leaf(4, 5, seed=2)


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

