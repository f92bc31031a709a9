"""The GPU sanitizer driver (tests/gpu_sanitize.py, run under compute-sanitizer by benchmarks/gpu_check.sh) on the
CPU: it must keep running and pass there, so it is ready whenever a GPU is lent."""
import gpu_sanitize


def test_sanitizer_driver_passes_on_the_cpu():
    gpu_sanitize.DEV = "cpu"
    gpu_sanitize.failures.clear()
    gpu_sanitize.checks = 0
    gpu_sanitize.run_all()
    gpu_sanitize.run_foreach()
    assert gpu_sanitize.failures == []
    assert gpu_sanitize.checks > 1000


# ---- benchmarks/gpu_check.sh --dry-run: the script's own logic, so a GPU's first run is not spent on it --------

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["build", "import", "cuda-tests", "big", "memcheck", "benchmarks"]


def _dry_run(tmp_path, **env):
    out = tmp_path / "out"
    run_env = dict(os.environ, OUT=str(out), PY=sys.executable, **env)
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run"], env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    return proc.stdout, summary, out


def test_gpu_check_dry_run_order_commands_and_files(tmp_path):
    stdout, summary, out = _dry_run(tmp_path)
    assert [line.split(":")[0] for line in summary] == STEPS  # the order: what matters most first
    assert all(": ok" in line for line in summary), summary
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "summary.txt"]
    log = (out / "gpu_check.log").read_text()
    assert "=============== summary" in log and "DRY RUN" in log
    commands = [line for line in stdout.splitlines() if line.startswith("dry run: would run:")]
    assert len(commands) == len(STEPS)
    assert "-rfE" in commands[2] and "tests/test_cuda.py" in commands[2] and "-k cuda" in commands[2]
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING=1" in commands[4] and "--subset" in commands[4]
    assert f"--out {out}" in commands[5]


def test_gpu_check_dry_run_failed_build_skips_the_rest_and_says_why(tmp_path):
    _, summary, _ = _dry_run(tmp_path, GPU_CHECK_DRY_FAIL="build")
    assert summary[0].startswith("build: FAILED rc=3")
    assert summary[1:] == [f"{s}: SKIPPED (the build did not complete)" for s in STEPS[1:]]


def test_gpu_check_dry_run_budget_fits_every_step(tmp_path):
    """Each step taking its whole limit (the worst case), every step still runs and the limits fit the budget:
    each keeps the minimum shares of the steps after it."""
    stdout, summary, _ = _dry_run(tmp_path, GPU_CHECK_DRY_FULL="1")
    assert all(": ok" in line for line in summary), summary
    limits = [int(m) for m in re.findall(r"\(limit (\d+)s;", stdout)]
    assert len(limits) == len(STEPS) and all(x >= 30 for x in limits)
    assert sum(limits) <= 480


def test_gpu_check_dry_run_out_of_time_says_why(tmp_path):
    # 30 s: less than the minimum shares the first two steps must keep for the steps after them, however long
    # the script's preamble takes on a loaded machine
    _, summary, _ = _dry_run(tmp_path, GPU_CHECK_BUDGET_S="30", GPU_CHECK_STEPS="cuda-tests big memcheck")
    assert [line.split(":")[0] for line in summary] == ["cuda-tests", "big", "memcheck"]
    assert all("SKIPPED (no time left" in line and "kept for the steps after it" in line for line in summary[:2])
