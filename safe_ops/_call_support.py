"""What the generated wrappers (``_generated.py``) need besides the ops and the in-place rules: torch's errors for
arguments that are not numbers or tensors, a Python number in place of a tensor, and the tracing test."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor
from torch.compiler import is_compiling

# True only while dynamo traces (then the wrappers take the traceable torch.ops path). is_dynamo_compiling is a
# plain `return False` in eager, a third of is_compiling's cost.
tracing = getattr(torch.compiler, "is_dynamo_compiling", is_compiling)

_NUMBERS = (numbers.Number, Tensor, torch.SymInt, torch.SymFloat, torch.SymBool)


def number_tensor(number, other) -> Tensor:
    """A Python number in place of `input` as the 0-dim tensor that promotes with `other` as torch's wrapped
    number does: of torch.result_type(other, number)."""
    if isinstance(other, Tensor):
        return torch.tensor(number, dtype=torch.result_type(other, number))
    return torch.tensor(number)


def check_number(name: str, arg: str, value) -> None:
    """torch's TypeError for a number argument that is not a number (torch.ops' schema cast would raise a
    RuntimeError)."""
    if not isinstance(value, _NUMBERS):
        raise TypeError(f"{name}(): argument '{arg}' must be Number, not {type(value).__name__}")


def check_target(name: str, target) -> None:
    """torch's TypeError for an in-place target that is not a tensor."""
    if not isinstance(target, Tensor):
        raise TypeError(f"descriptor '{name}' for 'torch._C.TensorBase' objects doesn't apply to a "
                        f"'{type(target).__name__}' object")
