"""A model that calls safe_ops ops, exported and compiled into an AOTInductor package for the C++ runner
(runner.cpp): python examples/aoti_cpp/model.py model.pt2 writes the package and prints the Python result that
the runner, loading the package and safe_ops' op library with no Python, prints too."""
from __future__ import annotations

import sys

import torch

import safe_ops

DIM = 16


class Block(torch.nn.Module):
    """A residual block written with safe_ops: add_ (the residual, in place), addcmul, lerp and accumulate."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = safe_ops.add_(self.proj(x), x)
        h = safe_ops.addcmul(h, y, w, value=0.5)
        h = safe_ops.lerp(h, y, 0.25)
        return safe_ops.accumulate([h, x, y], [1.0, 0.5, -2.0])


def reference(model: Block, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same computation with torch's own ops."""
    h = model.proj(x) + x
    h = torch.lerp(torch.addcmul(h, y, w, value=0.5), y, 0.25)
    return h + 0.5 * x - 2.0 * y


def make_model() -> Block:
    torch.manual_seed(0)
    return Block().eval()


def inputs() -> tuple:
    """The inputs runner.cpp makes the same way (no files to pass between the two)."""
    x = torch.linspace(-1.0, 1.0, 4 * DIM).reshape(4, DIM)
    y = torch.linspace(0.0, 2.0, 4 * DIM).reshape(4, DIM).cos()
    w = torch.linspace(-3.0, 3.0, 4 * DIM).reshape(4, DIM)
    return x, y, w


def summary(out: torch.Tensor) -> str:
    """What runner.cpp prints, in the same format."""
    head = " ".join(f"{v:.6f}" for v in out[0, :4].tolist())
    return f"shape [{', '.join(map(str, out.shape))}] sum {out.sum().item():.6f} first row [{head} ...]"


def export(path: str) -> torch.Tensor:
    """Writes the AOTInductor package to `path`; returns the eager (Python) result."""
    model = make_model()
    with torch.no_grad():
        program = torch.export.export(model, inputs())
        torch._inductor.aoti_compile_and_package(program, package_path=path)
        return model(*inputs())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/aoti_cpp/model.py OUTPUT.pt2")
    print("python:", summary(export(sys.argv[1])))
