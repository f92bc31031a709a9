"""`python -m safe_ops.guard` as users run it: subprocesses on the scripts in scripts/ (each bounded by a
timeout). Hazards: raise mode stops with a report naming the writing line and the saving node; report and copy
mode finish with the out-of-place gradients (checked against torch here). A clean ResNet: exit 0, stdout
unchanged. argv, __main__, sys.path[0] and exit codes pass through, for scripts and `-m`; bad use exits 2."""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from guard_helpers import marked_line

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
ROOT = HERE.parent.parent
TIMEOUT_S = 300
GUARD = [sys.executable, "-m", "safe_ops.guard"]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE.parent)]))  # safe_ops; tests/models.py


def run(*argvs, cwd=SCRIPTS):
    """Run the command lines concurrently (the machine may be small, the runs are independent)."""
    procs = [subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return done if len(done) > 1 else done[0]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"guard_cli_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hazards = _load("hazards")


def where(fn, marker):
    """How the report names a marked line of the hazard script: file as the command gave it, line, function."""
    return f"hazards.py:{marked_line(fn, marker)} (in {fn.__name__}:"


SITES = {  # hazard -> (function holding it, saving node)
    "sigmoid": (hazards.sigmoid_write, "SigmoidBackward0"),
    "data": (hazards.data_write, "ExpBackward0"),
    "thread": (hazards.Gate.forward, "TanhBackward0"),
}


def out_of_place_grads():
    """The gradients of the hazard script's programs written out of place, by torch."""
    x = torch.linspace(-1, 1, 4, dtype=torch.float64)
    s = x.sigmoid()
    xt = x.clone().requires_grad_()
    hazards.Gate()(xt, inplace=False).backward()
    return {"sigmoid": 2 * s * (1 - s), "data": x.exp(), "thread": xt.grad}


def printed_grads(stdout):
    return {d["hazard"]: torch.tensor(d["grad"], dtype=torch.float64) for d in map(json.loads, stdout.splitlines())}


@pytest.mark.parametrize("name", list(SITES))
def test_raise_stops_at_the_write_with_a_report(name):
    fn, node = SITES[name]
    r = run(GUARD + ["hazards.py", name])
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""  # stopped before the gradient was printed
    report = r.stderr
    assert f"write: {'add_' if name == 'thread' else 'mul_'} (aten." in report
    assert f"at {where(fn, 'WRITE')}" in report, report
    assert f"that {node} saved for backward at {where(fn, 'SAVE')}" in report, report
    assert "Fix:" in report and "stopped at the first unsafe in-place write" in report
    assert f'line {marked_line(fn, "WRITE")}, in {fn.__name__}' in report  # the write's traceback
    assert ("thread: worker" in report) == (name == "thread")
    assert "runpy" not in report and "safe_ops/guard" not in report


def test_report_mode_lists_each_hazard_once_and_computes_out_of_place_gradients(tmp_path):
    path = tmp_path / "hazards.json"
    r = run(GUARD + ["--mode", "report", "--json", str(path), "hazards.py"])
    assert r.returncode == 0, r.stderr
    expected = out_of_place_grads()
    got = printed_grads(r.stdout)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)
    for fn, _node in SITES.values():  # each ran twice: reported once, counted twice
        assert r.stderr.count(f"at {where(fn, 'WRITE')}") == 1, r.stderr
        assert f"hazards.py:{marked_line(fn, 'WRITE')}: " in r.stderr
    assert "6 unsafe in-place writes at 3 places" in r.stderr and r.stderr.count("(2 times") == 3
    report = json.loads(path.read_text())
    assert report["mode"] == "report" and report["exit_code"] == 0 and report["command"] == ["hazards.py"]
    assert report["stats"]["hazards"] == 6 and report["stats"]["copies"] == 6
    assert report["stats"]["bytes"] == 6 * 4 * 8
    by_line = {h["site"]["line"]: h for h in report["hazards"]}
    assert len(report["hazards"]) == 3
    for name, (fn, node) in SITES.items():
        h = by_line[marked_line(fn, "WRITE")]
        assert h["count"] == 2 and h["site"]["file"] == "hazards.py" and "# WRITE" in h["site"]["code"]
        assert h["saved"][0]["node"] == node and h["saved"][0]["site"]["line"] == marked_line(fn, "SAVE")
        assert h["thread"] == ("worker" if name == "thread" else "MainThread")


def test_copy_mode_computes_out_of_place_gradients_and_only_counts():
    r = run(GUARD + ["--mode", "copy", "hazards.py"])
    assert r.returncode == 0, r.stderr
    expected = out_of_place_grads()
    got = printed_grads(r.stdout)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)
    assert r.stderr.splitlines() == [
        "safe_ops.guard: copy mode: copied 6 saved tensors (192 bytes) before in-place writes at 3 places; "
        "checked 14 tensors saved for backward."]


def test_clean_resnet_runs_unchanged():
    plain, guarded = run([sys.executable, "clean_resnet.py"], GUARD + ["clean_resnet.py"])
    assert plain.returncode == 0 and guarded.returncode == 0, guarded.stderr
    assert guarded.stdout == plain.stdout and plain.stdout.count("loss") == 3
    assert guarded.stderr.startswith("safe_ops.guard: no unsafe in-place write (checked ")
    assert guarded.stderr.count("\n") == 1 and plain.stderr == ""


@pytest.mark.parametrize("form", ["script", "module"])
def test_argv_main_path_and_exit_code_pass_through(form):
    target = ["echo_argv.py"] if form == "script" else ["-m", "echo_argv"]
    args = ["a b", "--mode", "copy", "--exit", "7"]  # the program's own options are the program's
    plain, guarded = run([sys.executable, *target, *args], GUARD + [*target, *args])
    assert plain.returncode == guarded.returncode == 7, guarded.stderr
    seen = json.loads(guarded.stdout)
    assert seen == json.loads(plain.stdout)
    assert seen["name"] == "__main__" and seen["main_is_this_module"] and seen["argv"][1:] == args
    assert seen["path0"] == str(SCRIPTS)


def test_uncaught_exception_is_reported_as_python_does():
    plain, guarded = run([sys.executable, "echo_argv.py", "--raise"], GUARD + ["echo_argv.py", "--raise"])
    assert plain.returncode == guarded.returncode == 1
    *traceback, summary = guarded.stderr.splitlines()
    assert traceback == plain.stderr.splitlines()  # the program's frames only, as Python prints them
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: raised by echo_argv"
    assert summary.startswith("safe_ops.guard: no unsafe in-place write")


@pytest.mark.parametrize("argv,message", [
    ([], "no script to run"),
    (["missing.py"], "cannot open 'missing.py'"),
    (["--mode", "ignore", "hazards.py"], "unknown mode 'ignore'"),
    (["-m", "no_such_module_here"], "no module named 'no_such_module_here'"),
])
def test_bad_use_exits_2_with_usage(argv, message):
    r = run(GUARD + argv)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("usage: python -m safe_ops.guard [--mode raise|report|copy]") and message in r.stderr


def _readme_troubleshooting():
    """The README's troubleshooting section: its text blocks (PyTorch's error, then the command's outputs in
    raise and report mode) and the script they come from."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Troubleshooting"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    texts = [body for lang, body in blocks if lang == "text"]
    (script,) = [body for lang, body in blocks if lang == "python" and body.startswith("# train.py")]
    return texts, script


def _forward_op_named(error: str) -> str:
    """PyTorch's version error as the README quotes it (torch 2.13 and later name the forward op, `Sigmoid`; torch
    2.11 names its backward node, `SigmoidBackward0`)."""
    return re.sub(r"which is output (\d+) of (\w+?)Backward0,", r"which is output \1 of \2,", error)


def test_readme_troubleshooting_shows_what_the_command_prints(tmp_path):
    (error, raised, reported), script = _readme_troubleshooting()
    (tmp_path / "train.py").write_text(script)
    plain, guard_raise, guard_report = run([sys.executable, "train.py"], GUARD + ["train.py"],
                                           GUARD + ["--mode", "report", "train.py"], cwd=tmp_path)
    assert plain.returncode == 1 and _forward_op_named(plain.stderr.splitlines()[-1]) == error.strip()
    assert guard_raise.returncode == 1 and guard_raise.stderr == raised
    assert guard_report.returncode == 0 and guard_report.stderr == reported
