"""A clean program for test_guard_cli.py: the small ResNet of tests/models.py (its blocks end in
`out += identity`, its ReLUs are in place) trained a few steps with SGD; prints each step's loss."""
import sys

import torch

from models import SmallResNet


def main(steps):
    torch.manual_seed(0)
    model = SmallResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        data = torch.randn(4, 3, 16, 16)
        loss = model(data).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"step {step}: loss {loss.item():.9g}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
