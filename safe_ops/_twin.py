"""Which calls go to torch's own op, for the fake kernels: the declared rule ``DEFER_TO_TORCH``
(``_declarations.py``), which csrc/core/twin.h applies to the real calls from the same declaration."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from ._declarations import DEFER_TO_TORCH

KERNEL_DTYPES = frozenset(getattr(torch, name) for name in DEFER_TO_TORCH.dtypes)  # KERNEL_DTYPES, as torch dtypes
_NUMBER_KINDS = {"complex": complex, "bool": bool}
_DEFERRED_NUMBERS = tuple(_NUMBER_KINDS[kind] for kind in DEFER_TO_TORCH.numbers)


def uses_twin(args: Iterable, inplace: bool, promotes: bool = True) -> bool:
    """Whether DEFER_TO_TORCH gives this call (the op's arguments in order, an in-place kernel's target first) to
    torch's op; `promotes`: the op has torch's type promotion (``Op.dtype == "promote"``)."""
    rule = DEFER_TO_TORCH
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
                if (inplace and rule.inplace_mixed) or (not promotes and rule.unpromoted_mixed):
                    return True
                mixed = True
        elif isinstance(a, _DEFERRED_NUMBERS):
            return True
    return rule.recorded_mixed and mixed and requires_grad and torch.is_grad_enabled()


def aten_op(name: str, overload: str, inplace: bool):
    """torch's op of the same schema: aten::<name> or aten::<name>_."""
    packet = getattr(torch.ops.aten, f"{name}_" if inplace else name)
    return getattr(packet, overload or "default")


def cast_error(result: torch.dtype, target: torch.dtype) -> RuntimeError:
    """The error torch's in-place ops raise when the result dtype cannot be cast into the target."""
    def name(d):
        return torch.empty(0, dtype=d).type().split(".")[-1].replace("Tensor", "")
    return RuntimeError(f"result type {name(result)} can't be cast to the desired output type {name(target)}")
