"""import safe_ops without a usable extension fails with a message that says what to do."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _import_with(setup: str) -> subprocess.CompletedProcess:
    code = f"import sys, types, torch\n{setup}\nimport safe_ops\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_stale_extension_is_reported_with_the_build_command():
    stale = "m = types.ModuleType('safe_ops._C'); m.BUILT_FOR_TORCH = '0.0.1'; sys.modules['safe_ops._C'] = m"
    result = _import_with(stale)
    assert result.returncode != 0
    assert "built for torch 0.0.1" in result.stderr and "pip install --no-build-isolation -e ." in result.stderr


def test_missing_extension_is_reported_with_the_build_command():
    result = _import_with("sys.modules['safe_ops._C'] = None")  # makes `from . import _C` raise ImportError
    assert result.returncode != 0
    assert "cannot be loaded" in result.stderr and "make build" in result.stderr


def test_built_extension_imports():
    result = _import_with("")
    assert result.returncode == 0, result.stderr
