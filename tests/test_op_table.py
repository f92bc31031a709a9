"""The op table is complete (tests/op_table/): every declared op (safe_ops._declarations.OPS) has a row, its
samples reach every overload of the functional op and of its in-place kernel, some sample's backward reaches
every backward op (BACKWARD_OPS) and the vmap cases cover each, every foreach op (FOREACH_OPS) has a row whose
reference is torch's own foreach op, and each row gives every per-concern fact the test files iterate (or
skips it with a reason). A new op fails here until its row exists: no test file keeps a list of ops."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from safe_ops._declarations import BACKWARD_OPS, FOREACH_OPS, OPS, qualified

from op_table import FOREACH_TABLE, OP_TABLE, OPS_BY_NAME, ROW_MODULES, op_ids, replace_tensors

DECLARED_IDS = [op.name for op in OPS]
# The facts a row must give (or skip with a reason in its `skips`), and the ops they apply to.
CONCERNS = {
    "bitwise": lambda info: True,
    "grad_bitwise": lambda info: True,
    "fuzz": lambda info: True,
    "out_args": lambda info: True,
    "dtensor": lambda info: True,
    "dtensor_inplace": lambda info: True,
    "error_inputs": lambda info: True,
    "twin_cases": lambda info: info.declared.twin,  # torch's op of the same schema computes other dtypes
    "complex_grad_cases": lambda info: info.declared.twin,
}


class _Log(TorchDispatchMode):
    """The qualified names (`safe_ops::name.overload`) of the ops dispatched under it, backward included."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func.name())
        return func(*args, **(kwargs or {}))


def _qualified(name, overload):
    return f"safe_ops::{qualified(name, overload)}" if overload else f"safe_ops::{name}"


def _samples(info, requires_grad=False):
    torch.manual_seed(0)
    return [s for s in info.samples(torch.float64, "cpu", requires_grad=requires_grad) if not s.large]


@pytest.mark.parametrize("name", DECLARED_IDS)
def test_every_declared_op_has_a_row(name):
    assert name in OPS_BY_NAME, (
        f"declared op {name!r} (safe_ops/_declarations.py) has no row in the op table: add tests/op_table/{name}.py "
        f"defining OP = OpInfo({name!r}, ...) (see tests/op_table/core.py); until then it is untested everywhere")
    assert ROW_MODULES[name].OP is OPS_BY_NAME[name], f"the row of {name!r} lives in tests/op_table/{name}.py"


def test_no_row_without_a_declaration():
    assert sorted(OPS_BY_NAME) == sorted(DECLARED_IDS), sorted(set(OPS_BY_NAME) - set(DECLARED_IDS))


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_samples_reach_every_overload(info):
    reached = {info.overload_for(sample) for sample in _samples(info)}
    missing = [str(ov) for ov in info.overloads if ov not in reached]
    assert not missing, f"{info.name}: no sample of the row reaches overload(s) {missing}"


def _inplace_calls(info):
    """safe_ops.<name>_'s calls from the samples (the first operand, or a new target, written) and the row's
    update case."""
    for sample in _samples(info):
        if any(t.numel() == 0 for t in sample.tensors()):
            continue
        expected = info.op(*sample.args, **sample.kwargs)
        if info.separate_target:
            yield (torch.randn_like(expected),) + sample.args, sample.kwargs
        elif sample.args[0].shape == expected.shape and sample.args[0].dtype == expected.dtype:
            yield (sample.args[0].clone(),) + sample.args[1:], sample.kwargs
    yield info.update(torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_inplace_variant_reaches_every_inplace_kernel(info):
    assert callable(info.inplace), f"safe_ops.{info.name}_ is missing"
    log = _Log()
    with torch.no_grad(), log:
        for args, kwargs in _inplace_calls(info):
            info.inplace(*args, **kwargs)
    missing = [_qualified(f"{info.name}_inplace", ov.name) for ov in info.declared.overloads
               if _qualified(f"{info.name}_inplace", ov.name) not in log.seen]
    assert not missing, f"{info.name}_: no in-place call of the row's samples or update reaches {missing}"


def test_samples_backward_reach_every_backward_op():
    log = _Log()
    with log:
        for info in OP_TABLE:
            for sample in _samples(info, requires_grad=True):
                sample = replace_tensors(sample, lambda t: t.detach().requires_grad_())
                if any(t.numel() == 0 for t in sample.tensors()):
                    continue
                out = info.op(*sample.args, **sample.kwargs)
                torch.autograd.grad(out.sum(), sample.tensors(), allow_unused=True)
    missing = [_qualified(b.name, b.overload) for b in BACKWARD_OPS if _qualified(b.name, b.overload) not in log.seen]
    assert not missing, f"backward op(s) {missing} reached by no sample's backward: give a row a sample that needs them"


def test_every_backward_op_has_a_vmap_case():
    covered = {case[1] for info in OP_TABLE for case in info.backward_vmap_cases(3)}
    missing = [qualified(b.name, b.overload) for b in BACKWARD_OPS
               if getattr(getattr(torch.ops.safe_ops, b.name), b.overload or "default") not in covered]
    assert not missing, f"backward op(s) {missing} have no row's backward_vmap_cases"


@pytest.mark.parametrize("concern", list(CONCERNS))
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_row_gives_every_concern_or_skips_it(info, concern):
    if not CONCERNS[concern](info):
        return
    given = getattr(info, concern)
    given = given() if concern == "error_inputs" else given
    if concern in ("twin_cases",):
        given = any(given(dtype, lambda *s: torch.zeros(s, dtype=dtype), 1, None)
                    for dtype in (torch.int64, torch.complex64))
    elif concern == "complex_grad_cases":
        given = given(torch.complex128)
    assert given or info.skip_reason(concern), (
        f"{info.name}: the row gives no {concern!r} (tests/op_table/{info.name}.py): give it, or skip it with a "
        f"reason in skips=(({concern!r}, why),)")


@pytest.mark.parametrize("fop", FOREACH_OPS, ids=[f.name for f in FOREACH_OPS])
def test_every_foreach_op_has_a_row_with_torchs_reference(fop):
    rows = {info.name: info for info in FOREACH_TABLE}
    assert fop.name in rows, (
        f"foreach op {fop.name!r} (safe_ops/_declarations.py FOREACH_OPS) has no row: define FOREACH = "
        f"ForeachInfo({fop.name!r}, torch_ref=...) in tests/op_table/{fop.base}.py")
    info = rows[fop.name]
    ts = [torch.randn(3, dtype=torch.float64) for _ in range(2)]
    xs = info.operand_lists(lambda: [torch.rand(3, dtype=torch.float64) + 0.5 for _ in ts])
    log = _Log()
    with log:
        info.torch_ref(ts, xs, 0.5)
    assert f"aten::_foreach_{fop.base}_" in {n.split(".")[0] for n in log.seen}, (
        f"{fop.name}'s torch_ref does not call torch._foreach_{fop.base}_: {sorted(log.seen)}")


def test_no_foreach_row_without_a_declaration():
    assert sorted(info.name for info in FOREACH_TABLE) == sorted(f.name for f in FOREACH_OPS)


def test_every_check_group_is_run_by_a_test_file():
    """A row's op-specific Check runs from the test file that calls op_checks(<its group>): none is orphaned."""
    import glob
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    sources = "".join(open(p).read() for p in glob.glob(os.path.join(here, "test_*.py")))
    orphans = sorted({f"{info.name}: {check.group}" for info in OP_TABLE for check in info.checks
                      if f'op_checks("{check.group}")' not in sources})
    assert not orphans, f"checks whose group no test file runs: {orphans}"
