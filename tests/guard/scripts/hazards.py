"""Three in-place hazards, for test_guard_cli.py. `python hazards.py [sigmoid] [data] [thread] [--steps N]`
runs the chosen ones (all by default) N times (default 2) and prints each one's input gradient as JSON.

- sigmoid: a write into a sigmoid output before backward (PyTorch fails at backward, pointing at sigmoid);
- data: a write through `.data` into an exp output (PyTorch is silent, and its gradient wrong);
- thread: a write into a tanh output inside a module's forward, run in a second thread.
"""
import json
import sys
import threading

import torch
from torch import nn


def sigmoid_write(x):
    y = x.sigmoid()  # SAVE
    y.mul_(2)  # WRITE
    return y.sum()


def data_write(x):
    y = x.exp()  # SAVE
    y.data.mul_(2)  # WRITE
    return y.sum()


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4).double()

    def forward(self, x, inplace=True):
        g = torch.tanh(self.fc(x))  # SAVE
        if inplace:
            g.add_(1)  # WRITE
        else:
            g = g + 1
        return (g * x).sum()


def in_a_thread(x):
    model = Gate()
    t = threading.Thread(target=lambda: model(x).backward(), name="worker")
    t.start()
    t.join()


HAZARDS = {"sigmoid": sigmoid_write, "data": data_write, "thread": in_a_thread}


def main(argv):
    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 2
    names = [a for a in argv if a in HAZARDS] or list(HAZARDS)
    for name in names:
        for _ in range(steps):
            x = torch.linspace(-1, 1, 4, dtype=torch.float64, requires_grad=True)
            loss = HAZARDS[name](x)
            if loss is not None:
                loss.backward()
        print(json.dumps({"hazard": name, "grad": x.grad.tolist()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
