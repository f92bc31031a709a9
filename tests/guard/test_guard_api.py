"""The public shape of safe_ops.guard: the package module is callable (context manager and decorator forms),
``Guard`` and ``on_hazard``, the names kept where they were, and the package's import structure (acyclic: it
never imports the ops, and its hooks module imports nothing from safe_ops)."""
import ast
import pathlib
import sys
import threading
import types
import warnings

import pytest
import torch
from guard_helpers import leaf, live_records, marked_line
from hazard_catalogue import sigmoid_out_mul_

import safe_ops
import safe_ops.errors
from safe_ops import InplaceHazardError

PACKAGE = pathlib.Path(safe_ops.guard.__file__).parent


def test_guard_is_the_package_module_and_callable():
    assert isinstance(safe_ops.guard, types.ModuleType)
    assert sys.modules["safe_ops.guard"] is safe_ops.guard
    assert safe_ops.guard.__file__.endswith("guard/__init__.py")
    for g, mode in ((safe_ops.guard(), "raise"), (safe_ops.guard("warn"), "warn"),
                    (safe_ops.guard(mode="copy"), "copy"), (safe_ops.Guard("copy"), "copy")):
        assert type(g) is safe_ops.Guard and g.mode == mode
    assert safe_ops.Guard is safe_ops.guard.Guard
    assert {"guard", "Guard"} <= set(safe_ops.__all__)
    with pytest.raises(ValueError, match="mode"):
        safe_ops.guard(mode="ignore")


def test_names_kept_where_they_were():
    assert safe_ops.guard.InplaceHazardWarning is safe_ops.errors.InplaceHazardWarning
    assert safe_ops.Guard.InplaceHazardWarning is safe_ops.errors.InplaceHazardWarning
    assert safe_ops.guard.InplaceHazardError is safe_ops.InplaceHazardError is safe_ops.errors.InplaceHazardError
    assert safe_ops.guard.GuardStats is safe_ops.Guard.GuardStats
    assert safe_ops.guard().stats == safe_ops.guard.GuardStats()
    assert safe_ops.guard.live_records() == safe_ops.Guard.live_records() == live_records()
    from safe_ops.guard import hooks_are_only_guards  # what safe_ops._inplace imports today
    from safe_ops.guard._hooks import hooks_are_only_guards as in_hooks_module

    assert hooks_are_only_guards is in_hooks_module


def test_decorator_raise_and_bare():
    @safe_ops.guard("raise")
    def step(x):
        return sigmoid_out_mul_(x)

    @safe_ops.guard
    def bare(x):
        return sigmoid_out_mul_(x)

    for fn in (step, bare):
        assert fn.__name__ in ("step", "bare")
        with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
            fn(leaf(3, 4))
    assert live_records() == 0


def test_decorator_copy_counts_over_calls_and_gives_out_of_place_gradients():
    decorator = safe_ops.guard("copy")

    @decorator
    def step(x, depth=0):
        loss = sigmoid_out_mul_(x)
        return loss + step(x, depth - 1) if depth else loss  # a recursive call runs under the outer guard

    x = leaf(3, 4)
    for _ in range(3):
        step(x, depth=1).backward()
    s = x.detach().sigmoid()
    torch.testing.assert_close(x.grad, 3 * 2 * (2 * s * (1 - s)))
    assert decorator.stats.hazards == decorator.stats.copies == 6 and decorator.stats.saved > 0
    assert live_records() == 0


def test_decorator_warn_once_per_line_and_in_threads():
    @safe_ops.guard("warn")
    def step(x):
        return sigmoid_out_mul_(x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=step, args=(leaf(3, 4),)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        step(leaf(3, 4))
    ours = [w for w in caught if issubclass(w.category, safe_ops.guard.InplaceHazardWarning)]
    assert len(ours) == 1 and ours[0].lineno == marked_line(sigmoid_out_mul_, "WRITE")


def test_decorator_rejects_what_is_not_a_function():
    with pytest.raises(TypeError, match="decorates a function"):
        safe_ops.guard("raise")(3)


@pytest.mark.parametrize("mode", ["raise", "warn", "copy"])
def test_on_hazard_gets_the_report_as_data(mode):
    seen = []
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            with safe_ops.guard(mode, on_hazard=seen.append):
                loss = sigmoid_out_mul_(leaf(3, 4))
        except InplaceHazardError as error:
            assert mode == "raise" and error.hazard is seen[0]
            loss = None
    (h,) = seen
    assert (h.op, h.overload, h.shape, h.dtype, h.thread) == ("mul_", "aten.mul_.Tensor", (3, 4), "float64",
                                                            "MainThread")
    assert h.site.lineno == marked_line(sigmoid_out_mul_, "WRITE") and h.site.function == "sigmoid_out_mul_"
    assert "y.mul_(2)" in h.site.code()
    (saved,) = h.saved
    assert saved.node == "SigmoidBackward0" and saved.site.lineno == marked_line(sigmoid_out_mul_, "SAVE")
    assert h.message().splitlines()[1] == h.write_line() and h.to_dict()["saved"][0]["node"] == saved.node
    if mode == "warn":  # the listener does not change what the mode does
        with pytest.raises(InplaceHazardError, match="overwritten in place"):
            loss.backward()
    elif mode == "copy":
        loss.backward()


def _imports(path: pathlib.Path):
    """(level, module) of every import in a file: level 0 absolute, 1 `from .x`, 2 `from ..x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_import_structure():
    for path in PACKAGE.glob("*.py"):
        for level, module in _imports(path):
            # Never the ops (safe_ops._inplace imports the guard's hooks); from safe_ops only errors.
            assert level != 2 or module == "errors", (path.name, module)
            assert level != 0 or not module.startswith("safe_ops"), (path.name, module)
    hooks = _imports(PACKAGE / "_hooks.py")
    assert all(level == 0 and not module.startswith("safe_ops") for level, module in hooks), hooks


def test_modules_are_small():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
