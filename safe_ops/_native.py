"""Loads safe_ops._C (its dependency, the op library libsafe_ops.so, registers torch.ops.safe_ops.*) with an
actionable error when it is missing or was built against another torch."""
import os

import torch

from ._support import check_torch

check_torch(torch.__version__)

_BUILD_HINT = (
    "Build it against the torch you run: `make build` in a checkout, or "
    "`pip install --no-build-isolation -e .` into an existing environment."
)

try:
    from . import _C  # noqa: F401  (import registers the ops)
except ImportError as error:  # missing, or stale: undefined symbols of another torch
    raise ImportError(
        f"safe_ops: the native extension safe_ops._C cannot be loaded ({error}). "
        f"torch {torch.__version__} is installed. {_BUILD_HINT}"
    ) from error

_running = torch.__version__.split("+")[0]
if _C.BUILT_FOR_TORCH != _running:
    raise ImportError(
        f"safe_ops: safe_ops._C was built for torch {_C.BUILT_FOR_TORCH}, but torch {_running} is installed. "
        f"{_BUILD_HINT}"
    )

ops = torch.ops.safe_ops


def library_path() -> str:
    """Path of the op library, libsafe_ops.so: every safe_ops op with no Python dependency.

    A libtorch program or an AOTInductor runner loads it (``dlopen``, or links it) to run models that call
    safe_ops ops; in Python, ``torch.ops.load_library(safe_ops.library_path())`` alone registers them."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libsafe_ops.so")
