#!/usr/bin/env python3
"""The version matrix: safe_ops built and its whole test suite run on each torch/Python pair it claims, beside the
default leg (`make test`: Python 3.11, torch 2.14.1, CUDA compiled and linked).

    python3 .ci/matrix.py [LEG ...]        # `make matrix` (all legs), `make matrix LEGS="cpu newest"`

Each leg has its own venv, its own copy of the tracked source tree and so its own build directory, under
build/matrix/<leg>/, all incremental (a second run rebuilds only what changed), and a time limit after which its
process group is killed. The summary (leg × passed/failed/skipped × minutes) is printed and written to
build/matrix/summary.md; a failed leg exits non-zero and names its failing tests. Standard library only: it runs
before any venv exists.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATRIX = os.path.join(ROOT, "build", "matrix")

# python: the minor version (pyenv's), torch: the release, clients: the torchvision that matches it (timm needs one),
# registry: torch comes from the package registry (pip here is capped at torch 2.14.1 by a config file, which
# PIP_CONFIG_FILE=/dev/null bypasses), cuda: build the CUDA kernels (for sm_90, with PTX), limit: seconds.
LEGS = {
    "device": dict(python="3.12", torch="2.11.0", clients=["torchvision==0.26.0", "timm==1.0.31"], registry=True,
                   cuda=True, limit=1500,
                   proves="the GPU machines' pair (torch 2.11.0+cu130): C++17, CUDA kernels compiled for sm_90"),
    "cpu": dict(python="3.11", torch="2.13.0", clients=[], registry=False, cuda=False, limit=1200,
                proves="a CPU-only torch (the local 2.13.0 file): builds without CUDA; no torchvision exists for it"),
    "py310": dict(python="3.10", torch="2.14.1", clients=["torchvision==0.29.1", "timm==1.0.31"], registry=True,
                  cuda=False, limit=1200, proves="the oldest Python claimed, beside the default torch"),
    "newest": dict(python="3.13", torch="2.15.0", clients=["torchvision==0.29.2", "timm==1.0.31"], registry=True,
                   cuda=False, limit=1200, proves="what a new user's pip gives (torch 2.15.0, Python 3.13)"),
}
TEST_REQUIREMENTS = os.path.join(ROOT, "requirements-test.txt")


def log(msg: str) -> None:
    print(f"[matrix {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_python(minor: str) -> str:
    """pyenv's CPython <minor>.x (these machines have 3.10-3.13), else python<minor> on PATH."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    for root in filter(None, roots):
        found = sorted(glob.glob(os.path.join(root, "versions", f"{minor}.*", "bin", "python3")))
        if found:
            return found[-1]
    exe = shutil.which(f"python{minor}")
    if exe:
        return exe
    raise RuntimeError(f"no Python {minor} found (pyenv versions, or python{minor} on PATH)")


def run(cmd, *, cwd, env, logfile, deadline) -> int:
    """Run cmd with its output appended to logfile, killed (its whole process group) at the deadline."""
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.write("\n[matrix] killed: the leg ran past its time limit\n")
            return -signal.SIGKILL


def install(name: str, leg: dict, env: dict, logfile: str, deadline: float) -> str:
    """The leg's venv with its torch, clients and the test tools; reinstalled only when what it asks for changes."""
    venv = os.path.join(MATRIX, name, "venv")
    py = os.path.join(venv, "bin", "python")
    wants = [f"torch=={leg['torch']}", *leg["clients"], "-r", TEST_REQUIREMENTS]
    stamp = os.path.join(venv, ".installed")
    key = " ".join(wants) + "\n" + open(TEST_REQUIREMENTS).read()
    if os.path.exists(stamp) and open(stamp).read() == key:
        return py
    if not os.path.exists(py):
        if run([find_python(leg["python"]), "-m", "venv", venv], cwd=ROOT, env=env, logfile=logfile,
               deadline=deadline):
            raise RuntimeError("venv creation failed")
    pip_env = dict(env, PIP_CONFIG_FILE="/dev/null") if leg["registry"] else env
    if run([py, "-m", "pip", "install", "-q", *wants], cwd=ROOT, env=pip_env, logfile=logfile, deadline=deadline):
        raise RuntimeError("pip install failed")
    with open(stamp, "w") as f:
        f.write(key)
    return py


def sync_source(name: str) -> str:
    """A copy of the tracked (and untracked, not ignored) files, mtimes kept so that ninja rebuilds only what
    changed; files since deleted from the tree are deleted from the copy (the copied list is kept in .synced)."""
    src = os.path.join(MATRIX, name, "src")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    files = sorted(f for f in listed if f and os.path.isfile(os.path.join(ROOT, f)))
    manifest = os.path.join(src, ".synced")
    if os.path.exists(manifest):
        for f in set(open(manifest).read().splitlines()) - set(files):
            if os.path.isfile(os.path.join(src, f)):
                os.remove(os.path.join(src, f))
    for f in files:
        source, dst = os.path.join(ROOT, f), os.path.join(src, f)
        s = os.stat(source)
        if os.path.exists(dst):
            d = os.stat(dst)
            if d.st_mtime_ns == s.st_mtime_ns and d.st_size == s.st_size:
                continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(source, dst)
    with open(manifest, "w") as out:
        out.write("\n".join(files) + "\n")
    return src


def counts(junit: str) -> dict:
    result = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    if not os.path.exists(junit):
        return result
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            result["failed"] += 1
            result["failures"].append(f"{case.get('classname')}::{case.get('name')}")
        elif "skipped" in kinds:
            result["skipped"] += 1
        else:
            result["passed"] += 1
    return result


def run_leg(name: str, leg: dict) -> dict:
    os.makedirs(os.path.join(MATRIX, name), exist_ok=True)
    logfile = os.path.join(MATRIX, name, "log.txt")
    open(logfile, "w").close()
    start = time.monotonic()
    deadline = start + leg["limit"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["SAFE_OPS_CUDA"] = "1" if leg["cuda"] else "0"
    if leg["cuda"]:
        env["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
        env.setdefault("CUDA_HOME", "/usr/local/cuda")
    result = {"leg": name, "python": leg["python"], "torch": leg["torch"], "status": "failed", "install": 0.0,
              "build": 0.0, "test": 0.0, "passed": 0, "failed": 0, "skipped": 0, "failures": [], "why": ""}
    phase = "install"
    try:
        log(f"{name}: install (Python {leg['python']}, torch {leg['torch']}) — log: {os.path.relpath(logfile, ROOT)}")
        py = install(name, leg, env, logfile, deadline)
        result["install"] = time.monotonic() - start
        phase, t = "build", time.monotonic()
        src = sync_source(name)
        log(f"{name}: build ({'CPU and CUDA' if leg['cuda'] else 'CPU only'})")
        if run([py, "setup.py", "-q", "build_ext", "--inplace"], cwd=src, env=env, logfile=logfile,
               deadline=deadline):
            raise RuntimeError("the build failed")
        result["build"] = time.monotonic() - t
        phase, t = "test", time.monotonic()
        log(f"{name}: tests")
        junit = os.path.join(MATRIX, name, "junit.xml")
        if os.path.exists(junit):
            os.remove(junit)
        rc = run([py, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests"],
                 cwd=src, env=env, logfile=logfile, deadline=deadline)
        result["test"] = time.monotonic() - t
        result.update(counts(junit))
        if rc == -signal.SIGKILL:
            result["why"] = f"killed at its {leg['limit']} s limit during the tests"
        elif rc != 0:
            result["why"] = f"pytest exit {rc}"
        else:
            result["status"] = "passed"
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        result[phase] = time.monotonic() - (start if phase == "install" else t)
        result["why"] = f"{phase}: {exc}"
    log(f"{name}: {result['status']} {result['why']}".rstrip())
    if result["status"] != "passed":
        with open(logfile) as f:
            print(f.read()[-6000:], flush=True)
    return result


def summary(results: list) -> str:
    lines = ["| leg | Python | torch | result | passed | failed | skipped | install min | build min | test min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['leg']} | {r['python']} | {r['torch']} | {r['status']} | {r['passed']} | {r['failed']} "
                     f"| {r['skipped']} | {r['install'] / 60:.1f} | {r['build'] / 60:.1f} | {r['test'] / 60:.1f} |")
    for r in results:
        if r["status"] != "passed":
            lines.append(f"\n{r['leg']} failed ({r['why']}):")
            lines += [f"- {f}" for f in r["failures"]]
    return "\n".join(lines) + "\n"


def main(argv: list) -> int:
    names = argv or list(LEGS)
    unknown = [n for n in names if n not in LEGS]
    if unknown:
        print(f"unknown leg(s) {unknown}; the legs: {list(LEGS)}", file=sys.stderr)
        return 2
    results = [run_leg(n, LEGS[n]) for n in names]
    text = summary(results)
    os.makedirs(MATRIX, exist_ok=True)
    with open(os.path.join(MATRIX, "summary.md"), "w") as f:
        f.write(text)
    print("\n" + text, flush=True)
    passed = sum(r["passed"] for r in results)
    failed = sum(r["failed"] for r in results)
    skipped = sum(r["skipped"] for r in results)
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if all(r["status"] == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
