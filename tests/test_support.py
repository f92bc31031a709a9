"""The supported range (safe_ops/_support.py) is what the version matrix tests and what the README and setup.py
say, and a torch below it is refused by name."""
import importlib.util
import pathlib
import re

import pytest

from safe_ops import _support

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _matrix():
    spec = importlib.util.spec_from_file_location("matrix", ROOT / ".ci" / "matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _default_leg() -> tuple:
    """(Python, torch) of `make test`: requirements-dev.txt's torch pin and the Python the Makefile's venv uses."""
    torch_pin = re.search(r"^torch==(\S+)", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    return "3.11", torch_pin


def test_matrix_covers_the_stated_range():
    legs = [(leg["python"], leg["torch"]) for leg in _matrix().LEGS.values()] + [_default_leg()]
    torches = {_support.release(t) for _, t in legs}
    pythons = {_support.release(p) for p, _ in legs}
    assert min(torches) == _support.OLDEST_TORCH and max(torches) == _support.NEWEST_TESTED_TORCH, torches
    assert min(pythons) == _support.OLDEST_PYTHON and max(pythons) == _support.NEWEST_TESTED_PYTHON, pythons
    # the GPU machines' pair is a leg of its own
    assert ("3.12", "2.11.0") in legs


def test_readme_states_the_range():
    text = (ROOT / "README.md").read_text()
    torch_range = f"torch {_support.name(_support.OLDEST_TORCH)} to {_support.name(_support.NEWEST_TESTED_TORCH)}"
    python_range = f"Python {_support.name(_support.OLDEST_PYTHON)} to {_support.name(_support.NEWEST_TESTED_PYTHON)}"
    assert f"{torch_range} and {python_range}" in text


def test_setup_reads_the_range_from_support():
    setup = (ROOT / "setup.py").read_text()
    assert "torch>=2" not in setup and 'python_requires=">=' not in setup
    assert "_support.py" in setup


@pytest.mark.parametrize("version", ["2.10.0", "2.10.1+cu128", "1.13.1", "2.9.0a0+git1234"])
def test_a_torch_below_the_range_is_refused_by_name(version):
    with pytest.raises(ImportError, match=rf"safe_ops needs torch >= 2\.11 .*torch {re.escape(version)} is installed"):
        _support.check_torch(version)


@pytest.mark.parametrize("version", ["2.11.0", "2.11.0+cu130", "2.13.0+cpu", "2.15.0", "2.16.0.dev20261201"])
def test_supported_and_newer_torches_load(version):
    _support.check_torch(version)  # no error


def test_readme_quotes_the_error():
    message = None
    try:
        _support.check_torch("2.10.0")
    except ImportError as exc:
        message = str(exc)
    assert message and f"`{message}`" in (ROOT / "README.md").read_text()
