"""Deploying without Python: the op library (libsafe_ops.so) registers every op on its own, needs nothing of
CPython, and a C++ program runs an AOTInductor package of a model calling safe_ops ops with it
(examples/aoti_cpp), matching torch's result."""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

import safe_ops
from safe_ops._declarations import all_schemas

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "aoti_cpp"


def test_library_path_is_in_the_package():
    path = pathlib.Path(safe_ops.library_path())
    assert path.is_file() and path.parent == pathlib.Path(safe_ops.__file__).resolve().parent


@pytest.mark.skipif(shutil.which("nm") is None, reason="binutils' nm not found")
def test_op_library_needs_no_python():
    undefined = subprocess.run(["nm", "-D", "--undefined-only", safe_ops.library_path()], capture_output=True,
                               text=True, check=True).stdout.splitlines()
    assert undefined, "nm listed no undefined symbols: not the op library?"
    python = [line for line in undefined if re.search(r"\s_?Py[A-Z_a-z]", line)]
    assert python == []
    # ...and the Python extension is where the CPython symbols are (the check can see them).
    extension = subprocess.run(["nm", "-D", "--undefined-only", safe_ops._C.__file__], capture_output=True,
                               text=True, check=True).stdout
    assert re.search(r"\sPy[A-Z_a-z]", extension)


_LOAD_ALONE = """
import json, sys, torch
torch.ops.load_library(sys.argv[1])
assert "safe_ops" not in sys.modules
names = {"safe_ops::" + s.split("(")[0] for s in json.loads(sys.argv[2])}
missing = [n for n in names if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CPU")]
a, b = torch.randn(5), torch.randn(5)
print(json.dumps({"missing": missing, "add": torch.ops.safe_ops.add(a, b, alpha=2).tolist(),
                  "want": torch.add(a, b, alpha=2).tolist()}))
"""


def test_load_library_alone_registers_every_op():
    schemas = [s.text() for s in all_schemas()]
    done = subprocess.run([sys.executable, "-c", _LOAD_ALONE, safe_ops.library_path(), json.dumps(schemas)],
                          capture_output=True, text=True, cwd="/", check=True)
    result = json.loads(done.stdout)
    assert result["missing"] == []
    assert result["add"] == result["want"]


def _example_model():
    spec = importlib.util.spec_from_file_location("aoti_cpp_model", EXAMPLE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler found")
def test_cpp_runner_matches_python(tmp_path):
    runner, package, out = tmp_path / "runner", tmp_path / "model.pt2", tmp_path / "out.bin"
    subprocess.run(["sh", str(EXAMPLE / "build.sh"), str(runner)], env=dict(os.environ, PYTHON=sys.executable),
                   check=True)
    example = _example_model()
    python_result = example.export(str(package))
    # The package calls the four ops through the dispatcher (kept by export, not decomposed)...
    with zipfile.ZipFile(package) as archive:
        calls = [json.loads(archive.read(n))["nodes"] for n in archive.namelist() if n.endswith("wrapper.json")]
    assert {node["node"]["target"] for nodes in calls for node in nodes} == {
        "safe_ops::add_inplace.Tensor", "safe_ops::addcmul", "safe_ops::lerp.Scalar", "safe_ops::accumulate"}
    # ...so without the op library (another library loaded in its place) the runner cannot run it.
    done = subprocess.run([str(runner), str(package), "libm.so.6"], capture_output=True, text=True)
    assert done.returncode != 0 and "Could not find schema for safe_ops::" in done.stderr
    done = subprocess.run([str(runner), str(package), safe_ops.library_path(), str(out)], capture_output=True,
                          text=True, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr
    cpp = torch.frombuffer(bytearray(out.read_bytes()), dtype=torch.float32).reshape(4, example.DIM)
    model = example.make_model()
    with torch.no_grad():
        want = example.reference(model, *example.inputs())
    print(done.stdout.strip(), "\npython:", example.summary(python_result), "\ntorch: ", example.summary(want))
    torch.testing.assert_close(cpp, want)
    torch.testing.assert_close(python_result, want)
    assert done.stdout.strip() == "c++:    " + example.summary(cpp)
