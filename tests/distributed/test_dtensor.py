"""safe_ops on DTensors, on a 2-process gloo CPU mesh: a spawned group (tests/distributed/_worker.py) runs every
check under a 120 s limit (killed on timeout), once per registration path (MODES); each check is reported here as
its own test, against torch."""
import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("torch.distributed")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from op_table import FOREACH_TABLE, OP_TABLE  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 120



def _has_single_dim() -> bool:
    try:
        from torch.distributed.tensor._ops import _pointwise_ops
        from torch.distributed.tensor._ops.single_dim_strategy import register_single_dim_strategy  # noqa: F401
    except ImportError:
        return False
    return hasattr(_pointwise_ops, "_register_single_dim_pointwise")


# The private single-dim registration (torch 2.13 and later), and the register_sharding fallback: what torch 2.11
# runs, and what the worker makes the newer torches run by hiding their private registration.
MODES = [
    pytest.param("single_dim", marks=pytest.mark.skipif(
        not _has_single_dim(), reason=f"torch {torch.__version__} has no private single-dim registration "
        "(2.13 and later have it): safe_ops takes register_sharding, the fallback mode")),
    "fallback",
]


def _run_group(path, mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(HERE))]
                                                      + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_worker.py"), path, mode],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the 2-rank group ({mode}) ran past {TIMEOUT_S} s and was killed:\n{out[-4000:]}")
    if proc.returncode != 0 or not os.path.exists(path):
        pytest.fail(f"a rank failed ({mode}, exit {proc.returncode}):\n{out[-4000:]}")
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module", params=MODES)
def results(request, tmp_path_factory):
    return _run_group(str(tmp_path_factory.mktemp("dtensor") / "results.json"), request.param)


# The checks the worker runs: every row's DTensor cases (tests/op_table/).
OPS = [case.id for info in OP_TABLE for case in info.dtensor]
WEIGHT_GRAD = [case.id for info in OP_TABLE for case in info.dtensor if case.weight_grad]
PLACEMENTS = ["Shard(0)", "Shard(1)", "Replicate", "Partial"]
INPLACE = [f"{info.name}_" for info in OP_TABLE if info.dtensor_inplace]
PAIRS = ["Partial-Partial", "Partial-Replicate", "Partial-Shard(0)", "Replicate-Partial", "Shard(0)-Partial",
         "Replicate-Shard(0)"]
FOREACH = [f"{info.name}_" for info in FOREACH_TABLE]
NAMES = ([f"values[{o}-{p}]" for o in OPS for p in PLACEMENTS] + [f"broadcast[{o}]" for o in OPS]
         + [f"grad[{o}]" for o in OPS]
         + [f"weight_grad[{o}-{p}]" for o in WEIGHT_GRAD for p in PLACEMENTS]
         + [f"backward_ops[{p}]" for p in PLACEMENTS]
         + [f"inplace[{o}-{p}]" for o in INPLACE for p in PLACEMENTS[:3]]
         + [f"inplace_partial[{o}-{p}]" for o in INPLACE for p in PAIRS]
         + [f"foreach[{how}{o}-{layout}]" for o in FOREACH for layout in ["same", "mixed", "partial"]
            for how in ["", "fused_kernel:"]]
         + ["inplace_broadcast", "mesh_2d", "inplace_strided", "fsdp2_ema", "tp_mlp", "backend"])


@pytest.mark.parametrize("name", NAMES)
def test_dtensor(results, name):
    assert name in results, f"check {name} did not run"
    assert results[name] is None, results[name]


def test_no_unexpected_checks(results):
    assert set(results) - {"__counts__"} == set(NAMES)


def test_every_schema_has_a_sharding_rule():
    import torch
    import torch.distributed.tensor as dtensor

    import safe_ops  # noqa: F401
    from safe_ops._declarations import all_schemas, qualified

    prop = dtensor.DTensor._op_dispatcher.sharding_propagator
    known = set(prop.op_single_dim_strategy_funcs) | set(prop.op_strategy_funcs)
    missing = []  # every schema, the in-place and foreach kernels and the backward ops included
    for sch in all_schemas():
        name = qualified(sch.name, sch.overload)
        op = getattr(getattr(torch.ops.safe_ops, sch.name), sch.overload or "default")
        if op not in known:
            missing.append(name)
    assert not missing, missing
