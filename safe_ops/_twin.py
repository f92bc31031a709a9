"""Which calls go to torch's own op (the C++ rule of csrc/core/twin.h, for the fake kernels and the in-place wrappers):
the hand-written kernels compute float16/bfloat16/float32/float64 with real numbers; integer, bool and complex
operands, complex or bool numbers, in-place operands of another dtype than the target, and operands of several
dtypes that autograd records are torch's."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

KERNEL_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))


def uses_twin(args: Iterable, inplace: bool, promotes: bool = True) -> bool:
    target = None
    mixed = requires_grad = False
    for a in args:
        if isinstance(a, Tensor):
            if a.dtype not in KERNEL_DTYPES:
                return True
            requires_grad = requires_grad or a.requires_grad
            if target is None:
                target = a.dtype
            elif a.dtype != target:
                if inplace or not promotes:  # lerp with a 0-dim weight of another dtype: torch's promotion
                    return True
                mixed = True
        elif isinstance(a, (bool, complex)):
            return True
    return mixed and requires_grad and torch.is_grad_enabled()


def aten_op(name: str, overload: str, inplace: bool):
    """torch's op of the same schema: aten::<name> or aten::<name>_."""
    packet = getattr(torch.ops.aten, f"{name}_" if inplace else name)
    return getattr(packet, overload or "default")


def cast_error(result: torch.dtype, target: torch.dtype) -> RuntimeError:
    """The error torch's in-place ops raise when the result dtype cannot be cast into the target."""
    def name(d):
        return torch.empty(0, dtype=d).type().split(".")[-1].replace("Tensor", "")
    return RuntimeError(f"result type {name(result)} can't be cast to the desired output type {name(target)}")
