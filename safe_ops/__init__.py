"""safe_ops: fused, autograd-safe accumulation ops for PyTorch.

Functional ops (``safe_ops.add`` and every op declared beside it) never write into their inputs and save only
what their backward reads. In-place-when-safe variants (``add_`` ...) write into their first
argument when that cannot invalidate the autograd graph and otherwise return a new tensor: rebind the result,
``total = safe_ops.add_(total, x)``. Every op is declared once in ``safe_ops/_declarations.py``.
"""
from . import (
    _fake,  # noqa: F401  (registers the fake kernels)
    _vmap,  # noqa: F401  (registers the vmap batching rules)
    _wrappers,
    guard,  # the package, callable: safe_ops.guard(mode) is a Guard
)
from ._declarations import public_names
from ._inplace import Decision, can_write_inplace, inplace_decision
from ._native import library_path
from .errors import InplaceHazardError
from .guard import Guard

# safe_ops.add, safe_ops.add_, ... (generated from the declarations)
_wrappers.build(globals())

from . import _distributed  # noqa: E402  (DTensor sharding rules, registered once torch.distributed.tensor is imported)

_distributed.install()

__all__ = public_names() + [
    "can_write_inplace",
    "inplace_decision",
    "Decision",
    "InplaceHazardError",
    "guard",
    "Guard",
    "library_path",
]
