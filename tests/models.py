"""Small models shared by the tests and the benchmarks (``benchmarks/bench_guard.py`` imports this file):
in-place idioms of real training code that must never be reported, and one real hazard.

- ``SmallResNet`` of ``BasicBlock``s: ResNet's ``out += identity`` into a BatchNorm output and
  ``ReLU(inplace=True)``.
- ``TransformerBlock``: pre-norm attention and MLP, in-place dropout, a write into a GELU output (GELU saves
  its input, so it is safe) and the residual ``h += x`` into fc2's output (saved by no one).
- ``GatedBlock``: writes into a sigmoid's output, which sigmoid saved: a real hazard that copy mode repairs.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
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
    """A stem and three BasicBlocks (the second halves the resolution and doubles the width), then a linear
    head on the pooled features: 10 outputs for a (N, 3, H, W) input."""

    def __init__(self, width: int = 8):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(BasicBlock(w, w), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.fc = nn.Linear(2 * w, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TransformerBlock(nn.Module):
    """Pre-norm attention and MLP on a (N, L, d) input (batch first)."""

    def __init__(self, d: int = 16, heads: int = 2):
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
    """Writes into a sigmoid's output: a real hazard that copy mode repairs (``inplace=False``: the same
    computation out of place, the reference)."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x, inplace: bool = True):
        gate = torch.sigmoid(self.fc(x))
        if inplace:
            gate.mul_(2)
        else:
            gate = gate * 2
        return gate * x
