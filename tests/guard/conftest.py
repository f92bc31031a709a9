"""Shared fixtures of the guard tests (tests/guard/). Helpers live in guard_helpers.py and the hazard
catalogue in hazard_catalogue.py (plain modules: pytest puts this folder on sys.path); the models are
tests/models.py, shared with the benchmarks, so tests/ goes on sys.path too."""
import pathlib
import sys

import pytest
import torch

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from safe_ops.guard import _notices  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_guard_state():
    _notices.reset()
    yield
    assert torch._C._len_torch_dispatch_stack() == 0, "a guard left its dispatch mode behind"
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None, "a guard left its hooks behind"
