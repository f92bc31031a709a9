"""The in-place decision has one owner, decide_write() in csrc/core/inplace_decision.cpp (README: "When does `add_`
write in place?"). These tests hold the paths that act on it to it, over a table of hazard and positive patterns
for every declared in-place overload (safe_ops._declarations.OPS, by its operands' roles):

- torch.compile cannot trace into C: safe_ops/_inplace.py compiled_decision, the traceable image of the C++
  function's compiled mode, must return what _C._decide_write(..., compiled=True) returns, or raise the same error;
- the eager paths must act on what _C._decide_write(..., compiled=False) returns: safe_ops.<op>_ (its C fast entry
  or its Python slow path) writes exactly where it says IN_PLACE, returns a new tensor where it says COPY_*, raises
  where it says RAISE_*; safe_ops.foreach_<op>_ does the same per member.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

import safe_ops
from safe_ops import _C, Decision
from safe_ops._declarations import FOREACH_OPS, OPS, Op, Overload, decision_roles, inplace_params, operand_roles
from safe_ops._inplace import compiled_decision

SHAPE = (3, 4)
F32 = torch.float32


class Call:
    """One in-place call: the target and the parameters after it, each by its role."""

    def __init__(self, op: Op, ov: Overload, target: torch.Tensor):
        self.op, self.ov, self.roles = op, ov, decision_roles(op, ov)
        self.target = target
        self.args = [self._value(role, arg) for role, arg in zip(self.roles[1:], self._params())]

    def _params(self):
        parsed = self.ov.parsed()
        return parsed if self.op.inplace_target else parsed[1:]

    def _value(self, role: str, arg):
        if role in "og":
            return torch.rand(SHAPE, dtype=self.target.dtype if self.target.is_floating_point() else F32) + 0.5
        if role == "l":
            return [torch.rand(SHAPE) + 0.5, torch.rand(SHAPE) + 0.5]
        if role == "c":
            return torch.full((2,), 0.5)
        if role == "n":
            return 2.0
        if arg.type == "float[]?":
            return None
        return 0.5  # alpha, value, a number weight

    def tensor_operands(self) -> List[int]:
        return [i for i, r in enumerate(self.roles[1:]) if r in "og"]

    def decide(self, compiled: bool) -> int:
        return _C._decide_write(self.target, tuple(self.args), self.roles, compiled)

    def image(self) -> int:
        return compiled_decision(self.target, tuple(self.args), self.roles)

    def run(self):
        """safe_ops.<op>_ on this call, the parameters after the target by name."""
        names = [n for n in inplace_params(self.op) if n != (self.op.inplace_target or self.op.params[0])]
        return getattr(safe_ops, f"{self.op.name}_")(self.target, **dict(zip(names, self.args)))


def _overloads():
    return [pytest.param(op, ov, id=f"{op.name}.{ov.name or 'default'}") for op in OPS for ov in op.overloads]


def _first_operand(call: Call, make: Callable[[torch.Tensor], torch.Tensor]) -> Call:
    ops = call.tensor_operands()
    if ops:
        call.args[ops[0]] = make(call.args[ops[0]])
    elif "l" in call.roles:
        i = call.roles.index("l") - 1
        call.args[i] = [make(call.args[i][0])] + call.args[i][1:]
    elif "n" in call.roles:
        pass
    return call


def _operand_is_target(call: Call) -> Call:
    return _first_operand(call, lambda o: call.target)


def _grad_reader(call: Call) -> Call:
    """The operand whose gradient reads the target ('g') requires grad; else the first operand does."""
    for i, r in enumerate(call.roles[1:]):
        if r == "g":
            call.args[i] = call.args[i].requires_grad_()
            return call
    return _first_operand(call, lambda o: o.requires_grad_())


def _leaf() -> torch.Tensor:
    return torch.zeros(SHAPE, requires_grad=True)


def _saved() -> torch.Tensor:
    buf = torch.zeros(SHAPE)
    _saved.keep = torch.rand(SHAPE, requires_grad=True) * buf  # a pending backward saved buf
    return buf


def _graph() -> torch.Tensor:
    return torch.rand(SHAPE, requires_grad=True) * 2


# name -> (make target, change the call or None, grad mode). Each runs for every overload of every op.
Pattern = Tuple[Callable[[], torch.Tensor], Optional[Callable[[Call], Call]], bool]
PATTERNS: Dict[str, Pattern] = {
    "plain state": (lambda: torch.zeros(SHAPE), None, True),
    "plain state, no_grad": (lambda: torch.zeros(SHAPE), None, False),
    "operands require grad": (lambda: torch.zeros(SHAPE), _grad_reader, True),
    "operands require grad, no_grad": (lambda: torch.zeros(SHAPE), _grad_reader, False),
    "leaf requiring grad": (_leaf, None, True),
    "leaf requiring grad, no_grad": (_leaf, None, False),
    "view of state": (lambda: torch.zeros(5, 4)[1:4], None, True),
    "view of a leaf": (lambda: _leaf()[0:3], None, True),
    "graph tensor": (_graph, None, True),
    "graph tensor, no_grad": (_graph, None, False),
    "saved state": (_saved, None, True),
    "saved state, no_grad": (_saved, None, False),
    "expanded": (lambda: torch.zeros(4).expand(SHAPE), None, True),
    "operand is target": (lambda: torch.zeros(SHAPE), _operand_is_target, True),
    "operand is target, no_grad": (lambda: torch.zeros(SHAPE), _operand_is_target, False),
    "operand broadcasts to target": (lambda: torch.zeros(SHAPE), lambda c: _first_operand(c, lambda o: o[0]), True),
    "result broadcasts beyond target": (lambda: torch.zeros(4), None, True),
    "result broadcasts beyond state, no_grad": (lambda: torch.zeros(4), None, False),
    "result broadcasts beyond graph tensor, no_grad": (lambda: _graph()[0], None, False),
    "shapes do not broadcast": (lambda: torch.zeros(SHAPE), lambda c: _first_operand(c, lambda o: o[:, :3]), True),
    "float64 operand": (lambda: torch.zeros(SHAPE), lambda c: _first_operand(c, lambda o: o.double()), True),
    "0-dim float64 weight": (lambda: torch.zeros(SHAPE),
                             lambda c: _last_operand(c, lambda o: o[0, 0].double()), True),
    "integer target": (lambda: torch.zeros(SHAPE, dtype=torch.int64), None, True),
    "integer target, integer operands": (lambda: torch.zeros(SHAPE, dtype=torch.int64),
                                         lambda c: _all_operands(c, lambda o: o.long()), True),
}


# Where the op's own dtype support answers before the write (an op without integer kernels or twin): the agreement test
# only.
DECISION_ONLY = {"integer target, integer operands"}


def _last_operand(call: Call, make) -> Call:
    ops = call.tensor_operands()
    if len(ops) > 1:
        call.args[ops[-1]] = make(call.args[ops[-1]])
    return call


def _all_operands(call: Call, make) -> Call:
    for i, r in enumerate(call.roles[1:]):
        if r in "ogc":
            call.args[i] = make(call.args[i])
        elif r == "l":
            call.args[i] = [make(x) for x in call.args[i]]
        elif r in "ns" and isinstance(call.args[i], float):
            call.args[i] = 1
    return call


@contextlib.contextmanager
def _mode(grad: bool):
    with torch.set_grad_enabled(grad):
        yield


def _outcome(fn):
    try:
        return fn()
    except RuntimeError as e:
        return (type(e), str(e))


def _call(op, ov, pattern: str) -> Call:
    make, change, _ = PATTERNS[pattern]
    call = Call(op, ov, make())
    return change(call) if change else call


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("op, ov", _overloads())
def test_compiled_image_agrees_with_the_cpp_decision(op, ov, pattern):
    call = _call(op, ov, pattern)
    with _mode(PATTERNS[pattern][2]):
        cpp = _outcome(lambda: call.decide(compiled=True))
        image = _outcome(call.image)
    if isinstance(cpp, int) and isinstance(image, int):
        assert Decision(image) == Decision(cpp)
    else:
        assert image == cpp


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p not in DECISION_ONLY])
@pytest.mark.parametrize("op, ov", _overloads())
def test_inplace_variant_acts_on_the_decision(op, ov, pattern):
    call = _call(op, ov, pattern)
    with _mode(PATTERNS[pattern][2]):
        decision = _outcome(lambda: call.decide(compiled=False))
        if not isinstance(decision, int):  # torch's error: the variant raises it
            with pytest.raises(decision[0], match="can't be cast|expected dtype|broadcast"):
                call.run()
            return
        decision = Decision(decision)
        if decision.name.startswith("RAISE_") or decision == Decision.COPY_INTERNAL_OVERLAP:
            with pytest.raises(RuntimeError):
                call.run()
            return
        result = call.run()
    assert (result is call.target) == (decision == Decision.IN_PLACE), decision.name


def test_every_pattern_outcome_is_a_named_decision():
    """The table above reaches every operand-level decision of eager and compiled mode."""
    seen = set()
    for op in OPS:
        for ov in op.overloads:
            for pattern, (_, _, grad) in PATTERNS.items():
                for compiled in (False, True):
                    call = _call(op, ov, pattern)
                    with _mode(grad):
                        d = _outcome(lambda: call.decide(compiled))
                        if isinstance(d, int):
                            seen.add(Decision(d))
    operand_level = {Decision.COPY_OPERAND_IS_TARGET, Decision.COPY_GRAD_READS_TARGET,
                     Decision.COPY_RESULT_DOES_NOT_FIT, Decision.RAISE_RESULT_DOES_NOT_FIT_NO_GRAD,
                     Decision.COPY_COMPILED_GRAPH_TENSOR}
    assert operand_level <= seen, operand_level - seen


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if "broadcast" not in p and "integer" not in p
                                     and "float64" not in p])
@pytest.mark.parametrize("fop", FOREACH_OPS, ids=lambda f: f.name)
def test_foreach_members_act_on_the_decision(fop, pattern):
    base = next(op for op in OPS if op.name == fop.base)
    ov = next(o for o in base.overloads if operand_roles(base, o).count("o") == 1 + len(fop.lists))
    call = _call(base, ov, pattern)
    with _mode(PATTERNS[pattern][2]):
        operands = [call.args[i] for i in call.tensor_operands()][: len(fop.lists)]
        decision = _outcome(lambda: _C._decide_write(call.target, tuple(operands), "t" + "o" * len(operands), False))
        run = getattr(safe_ops, f"{fop.name}_")
        go = lambda: run([call.target], *[[o] for o in operands], **{fop.number: 0.5})  # noqa: E731
        if not isinstance(decision, int) or Decision(decision).name.startswith("RAISE_") or \
                decision == Decision.COPY_INTERNAL_OVERLAP:
            with pytest.raises(RuntimeError):
                go()
            return
        result = go()[0]
    assert (result is call.target) == (decision == Decision.IN_PLACE), Decision(decision).name


def test_the_core_does_not_import_the_guard():
    import ast
    import pathlib

    root = pathlib.Path(safe_ops.__file__).parent
    for name in ("_inplace.py", "_foreach.py", "_wrappers.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "guard" not in (node.module or ""), (name, node.module)
