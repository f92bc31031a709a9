"""One table drives the tests and benchmarks (PyTorch's OpInfo idea, small): a module per declared op
(safe_ops/_declarations.py) holds its row, ``OP = OpInfo(...)``, with its torch reference, sample inputs, error
inputs, in-place update case, benchmark call and every per-op fact a test needs (bitwise, fuzz, out=, dtype
twin, transform, DTensor and CUDA cases; op-specific checks; skips), and, for a declared foreach op,
``FOREACH = ForeachInfo(...)``. The test files iterate OP_TABLE and FOREACH_TABLE and name no op, so a new op is
tested the moment its module exists (and tests/test_op_table.py fails until it does); the functions, overloads
and in-place variants come from the declaration, not from here."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, List

import pytest

from safe_ops._declarations import FOREACH_OPS, OPS

from .core import (  # noqa: F401
    DECLARED,
    DECLARED_FOREACH,
    FLOAT_DTYPES,
    BitwiseCase,
    Check,
    DTensorCase,
    ErrorInput,
    ForeachInfo,
    FuzzInfo,
    OpInfo,
    Sample,
    check_gradients,
    flat_tensors,
    make_tensor,
    replace_tensors,
    sorted_by_declaration,
)

_INFRA = {"core", "samples"}
ROW_MODULES = {}
for _m in pkgutil.iter_modules(__path__):
    if _m.name not in _INFRA:
        ROW_MODULES[_m.name] = importlib.import_module(f"{__name__}.{_m.name}")

OP_TABLE: List[OpInfo] = sorted_by_declaration(
    [m.OP for m in ROW_MODULES.values() if hasattr(m, "OP")], [op.name for op in OPS])
FOREACH_TABLE: List[ForeachInfo] = sorted_by_declaration(
    [m.FOREACH for m in ROW_MODULES.values() if hasattr(m, "FOREACH")], [f.name for f in FOREACH_OPS])
OPS_BY_NAME = {info.name: info for info in OP_TABLE}


def reference_update(info: OpInfo, args: tuple, kwargs: dict):
    """The out-of-place reference of safe_ops.<name>_(*args): the functional reference with the target as
    its first operand (or the row's own ref_inplace, for a target that is not an operand)."""
    if info.ref_inplace is not None:
        return info.ref_inplace(*args, **kwargs)
    return info.ref(*args, **kwargs)


def inplace_variants():
    """{name_: (safe update(t, o), reference update(t, o))} for every op: the in-place hazard tables."""
    variants = {}
    for info in OP_TABLE:
        def safe(t, o, info=info):
            args, kwargs = info.update(t, o)
            return info.inplace(*args, **kwargs)

        def reference(t, o, info=info):
            args, kwargs = info.update(t, o)
            return reference_update(info, args, kwargs)

        variants[f"{info.name}_"] = (safe, reference)
    return variants


def op_ids():
    return [info.name for info in OP_TABLE]


def foreach_ids():
    return [info.name + "_" for info in FOREACH_TABLE]


def ops_with(attr: str) -> List[OpInfo]:
    """The rows whose `attr` is set (not None, not empty)."""
    return [info for info in OP_TABLE if getattr(info, attr)]


def op_checks(group: str) -> list:
    """pytest params of every row's op-specific checks of `group`, id `<op>-<check id>`."""
    return [pytest.param(check.fn, id=f"{info.name}-{check.id}")
            for info in OP_TABLE for check in info.checks if check.group == group]


def skip_if(info, test: str) -> None:
    """Skips the running test where the row says it does not apply (its `skips`)."""
    reason = info.skip_reason(test)
    if reason is not None:
        pytest.skip(reason)


def run_check(fn: Callable[[], None]) -> None:
    fn()
