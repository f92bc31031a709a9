"""Every safe_ops op, declared once (ATen's native_functions.yaml, small).

From each declaration come, with no other list anywhere:
- the operator schemas of the functional op, its in-place kernel (``<name>_inplace``, first argument
  ``Tensor(a!)``) and the backward ops (generated C++: ``tools/codegen.py`` at build time);
- the C fast entry points, one per overload (same generated C++);
- the Python wrappers ``safe_ops.<name>`` and ``safe_ops.<name>_`` with their overload choice, docstrings and
  in-place-when-safe rules (``_wrappers.py``, at import);
- the fake kernels of the functional and in-place ops (``_fake.py``), ``__all__``, and the test and benchmark
  tables (``tests/op_table.py`` adds samples and references per op name).

This module imports nothing but the standard library: the build reads it before torch is involved.
Schema argument strings use torch's schema syntax; the Python wrapper takes the same arguments in the same
order under the names in ``params`` (torch's own names: ``input`` for ``self``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Arg:
    type: str  # schema type: Tensor, Scalar, Tensor[], float[]?, ...
    name: str  # schema name
    default: Optional[str]
    kwarg_only: bool


@dataclass(frozen=True)
class Overload:
    name: str  # "" for the default overload
    args: str  # schema arguments of the functional form
    when: str = "True"  # Python condition (over the wrapper's parameter names) that selects this overload
    # The operand whose gradient reads the original target (lerp's tensor weight): while it requires grad in grad
    # mode the in-place variant never writes (it returns the functional result). Role 'g' in inplace_roles.
    grad_reads_target: str = ""
    # Python expression for the in-place variant's out-of-place result (default: the functional op).
    inplace_fallback: str = ""

    def parsed(self) -> List[Arg]:
        return parse_args(self.args)


@dataclass(frozen=True)
class Op:
    name: str
    params: Tuple[str, ...]  # Python parameter names, one per schema argument, in order
    overloads: Tuple[Overload, ...]
    summary: str  # first docstring line: what it computes
    saves: str  # what autograd saves for backward
    # Result dtype: "promote" (torch's promotion over the operands), "first" (no promotion: lerp).
    dtype: str = "promote"
    # Tensor arguments that join the dtype as 0-dim numbers but not the broadcast shape (accumulate's weights).
    coefficients: Tuple[str, ...] = ()
    # Name of the in-place target when the functional op has no `self` (accumulate_(out, tensors, ...)).
    inplace_target: str = ""
    # torch has an op of this name and schema (aten::<name>, in place aten::<name>_): it computes the calls the
    # kernels do not (integer, bool and complex dtypes, complex or bool numbers, in-place operands of another
    # dtype), with torch's own autograd (csrc/core/twin.h, safe_ops/_twin.py). accumulate has none.
    twin: bool = False
    # `input` may be a Python number, as torch.add(2, t) takes it (a wrapped number: it joins the promotion as a
    # number does).
    number_input: bool = False


@dataclass(frozen=True)
class ForeachOp:
    """``safe_ops.foreach_<base>_(tensors, <lists>..., <number>)``: ``safe_ops.<base>_`` for every member of a list,
    under the same in-place contract per member. Members that are plain writes go through one fused kernel,
    ``foreach_<base>_inplace`` (schema: ``foreach_schema_args``), one pass over all of them."""

    base: str  # the per-member op, an Op of OPS: "lerp"
    formula: str  # its element formula in csrc/core/formulas.h, constructed per member from the number
    lists: Tuple[str, ...]  # Python names of the operand lists after the target list: ("ends",)
    number: str  # Python name of the per-member number: "weight"
    number_default: Optional[str] = None  # None: required; else keyword-only with this default ("1")
    # The base op's keyword for the number (lerp: positional `weight`; add: alpha=...).
    number_keyword: str = ""
    # An operand list member may be a Python number (add): such members take the per-tensor path.
    number_members: bool = False

    @property
    def name(self) -> str:
        return f"foreach_{self.base}"

    @property
    def params(self) -> Tuple[str, ...]:
        return ("tensors",) + self.lists + (self.number,)


@dataclass(frozen=True)
class BackwardOp:
    """An op called only by autograd Nodes (fused backward passes), with CPU/CUDA/fake kernels so that
    torch.compile can trace a backward."""

    name: str
    overload: str
    args: str
    returns: str


OPS: Tuple[Op, ...] = (
    Op(
        "add",
        ("input", "other", "alpha"),
        (
            Overload("Tensor", "Tensor self, Tensor other, *, Scalar alpha=1", "isinstance(other, Tensor)"),
            Overload("Scalar", "Tensor self, Scalar other, Scalar alpha=1"),
        ),
        "``input + alpha * other``, like :func:`torch.add` (broadcasting, type promotion, ``other`` a number).",
        "nothing (two shapes and ``alpha``).",
        twin=True,
        number_input=True,
    ),
    Op(
        "sub",
        ("input", "other", "alpha"),
        (
            Overload("Tensor", "Tensor self, Tensor other, *, Scalar alpha=1", "isinstance(other, Tensor)"),
            Overload("Scalar", "Tensor self, Scalar other, Scalar alpha=1"),
        ),
        "``input - alpha * other``, like :func:`torch.sub`.",
        "nothing (two shapes and ``alpha``).",
        twin=True,
        number_input=True,
    ),
    Op(
        "accumulate",
        ("tensors", "weights"),
        (
            Overload(
                "weights_tensor",
                "Tensor[] tensors, Tensor weights",
                "isinstance(weights, Tensor)",
                inplace_fallback="accumulate([out] + tensors, torch.cat([weights.new_ones(1), weights]))",
            ),
            Overload(
                "",
                "Tensor[] tensors, float[]? weights=None",
                inplace_fallback="accumulate([out] + tensors, None if weights is None else [1.0] + list(weights))",
            ),
        ),
        "``Σ weights[i] * tensors[i]`` in one pass over the inputs, with no intermediate tensors.\n\n"
        "``weights``: None (all ones), a sequence of numbers, or a 1-D tensor of length K (differentiable). The\n"
        "tensors broadcast to one shape; the result dtype is torch's promotion of ``Σ weights[i] * tensors[i]``;\n"
        "float16/bfloat16 accumulate in float32 and round once. A tensor listed several times is read once.",
        "with number weights, nothing; with a weights tensor, the tensors only if the weights need a gradient\n"
        "and the weights (K numbers) only if some tensor does.",
        coefficients=("weights",),
        inplace_target="out",
    ),
    Op(
        "addcmul",
        ("input", "tensor1", "tensor2", "value"),
        (Overload("", "Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1"),),
        "``input + value * tensor1 * tensor2``, like :func:`torch.addcmul`.",
        "``tensor2`` only if ``tensor1`` needs a gradient, ``tensor1`` only if ``tensor2`` does, nothing for\n"
        "``input``.",
        twin=True,
    ),
    Op(
        "addcdiv",
        ("input", "tensor1", "tensor2", "value"),
        (Overload("", "Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1"),),
        "``input + value * tensor1 / tensor2``, like :func:`torch.addcdiv` (Adam's update).",
        "``tensor2`` if ``tensor1`` or ``tensor2`` needs a gradient, ``tensor1`` only if ``tensor2`` does,\n"
        "nothing for ``input``.",
        twin=True,
    ),
    Op(
        "lerp",
        ("input", "end", "weight"),
        (
            Overload(
                "Tensor",
                "Tensor self, Tensor end, Tensor weight",
                "isinstance(weight, Tensor)",
                # The weight's gradient reads the original input, which the write would destroy.
                grad_reads_target="weight",
            ),
            Overload("Scalar", "Tensor self, Tensor end, Scalar weight"),
        ),
        "``input + weight * (end - input)``, like :func:`torch.lerp` (same formula, no type promotion).\n\n"
        "The EMA update is ``ema = lerp(ema, x, 1 - decay)``.",
        "with a number weight, nothing; with a tensor weight, the weight only if ``input`` or ``end`` needs a\n"
        "gradient, and ``input`` and ``end`` only if the weight does.",
        dtype="first",
        twin=True,
    ),
)

FOREACH_OPS: Tuple[ForeachOp, ...] = (
    ForeachOp("add", "Add", ("others",), "alpha", "1", "alpha", number_members=True),
    ForeachOp("lerp", "LerpScalarWeight", ("ends",), "weight"),
    ForeachOp("addcmul", "Addcmul", ("tensors1", "tensors2"), "value", "1", "value"),
    ForeachOp("addcdiv", "Addcdiv", ("tensors1", "tensors2"), "value", "1", "value"),
)

# The fused kernel of every ForeachOp has one schema: the members, their operands member-major (len(lists) per
# member), and the per-member number as host values or as a tensor of them on the device (read there: no sync).
FOREACH_SCHEMA_ARGS = "Tensor(a!)[] self, Tensor[] operands, float[] scalars, Tensor? scalar_tensor"

BACKWARD_OPS: Tuple[BackwardOp, ...] = (
    BackwardOp("scale_many", "", "Tensor grad, float[] scales", "Tensor[]"),
    BackwardOp("scale_many", "weights_tensor", "Tensor grad, Tensor scales", "Tensor[]"),
    BackwardOp("dot_many", "", "Tensor grad, Tensor[] tensors", "Tensor"),
    BackwardOp(
        "addcmul_backward",
        "",
        "Tensor grad, Tensor? tensor1, Tensor? tensor2, Scalar value, bool[2] output_mask",
        "(Tensor, Tensor)",
    ),
    BackwardOp(
        "addcdiv_backward",
        "",
        "Tensor grad, Tensor? tensor1, Tensor? tensor2, Scalar value, bool[2] output_mask",
        "(Tensor, Tensor)",
    ),
    BackwardOp(
        "lerp_backward",
        "",
        "Tensor grad, Tensor? self, Tensor? end, Tensor? weight, bool[3] output_mask",
        "(Tensor, Tensor, Tensor)",
    ),
)


def parse_args(args: str) -> List[Arg]:
    """Schema arguments "Tensor self, *, Scalar alpha=1" as Args."""
    parsed: List[Arg] = []
    kwarg_only = False
    for part in (p.strip() for p in args.split(",")):
        if part == "*":
            kwarg_only = True
            continue
        decl, _, default = part.partition("=")
        type_, name = decl.rsplit(" ", 1)
        parsed.append(Arg(type_.strip(), name.strip(), default.strip() or None, kwarg_only))
    return parsed


def qualified(name: str, overload: str) -> str:
    return f"{name}.{overload}" if overload else name


def inplace_args(op: Op, overload: Overload) -> str:
    """Schema arguments of the in-place kernel: `self` becomes `Tensor(a!) self`, or `Tensor(a!) out` leads."""
    if op.inplace_target:
        return f"Tensor(a!) {op.inplace_target}, {overload.args}"
    assert overload.args.startswith("Tensor self"), op.name
    return "Tensor(a!)" + overload.args[len("Tensor") :]


def inplace_params(op: Op) -> Tuple[str, ...]:
    return ((op.inplace_target,) if op.inplace_target else ()) + op.params


def operand_roles(op: Op, overload: Overload) -> List[str]:
    """Each functional parameter's part in the op: 'o' a tensor operand, 'l' a list of tensor operands, 'c' a
    coefficient tensor (joins the dtype, not the shape), 'n' a number operand (a number where another overload
    takes a tensor; it joins the promotion), 's' any other number or list (alpha, value, weights)."""
    tensor_names = {name for o in op.overloads for name, a in zip(op.params, o.parsed()) if a.type == "Tensor"}
    roles = []
    for name, arg in zip(op.params, overload.parsed()):
        if arg.type == "Tensor[]":
            roles.append("l")
        elif arg.type == "Tensor":
            roles.append("c" if name in op.coefficients else "o")
        elif arg.type == "Scalar" and name in tensor_names and op.dtype == "promote":
            roles.append("n")
        else:
            roles.append("s")
    return roles


def inplace_roles(op: Op, overload: Overload) -> str:
    """operand_roles of the in-place kernel's parameters, its target first ('t')."""
    roles = operand_roles(op, overload)
    return "t" + "".join(roles if op.inplace_target else roles[1:])


def decision_roles(op: Op, overload: Overload) -> str:
    """inplace_roles as the in-place decision reads them (csrc/core/inplace_decision.h): the target 'f' for an op
    that does not promote (dtype "first"), the operand named by grad_reads_target 'g'."""
    named = zip(op.params, operand_roles(op, overload))
    roles = ["g" if name == overload.grad_reads_target else r for name, r in named]
    return ("f" if op.dtype == "first" else "t") + "".join(roles if op.inplace_target else roles[1:])


def entry_name(name: str, overload: str) -> str:
    """Name of the C fast entry point of an overload in safe_ops._C."""
    return f"{name}_{overload or 'default'}"


@dataclass(frozen=True)
class Schema:
    name: str
    overload: str
    args: str
    returns: str
    fast_entry: bool  # has a C fast entry point
    roles: str = ""  # in-place kernels: decision_roles, for the entry's in-place decision

    def text(self) -> str:
        return f"{qualified(self.name, self.overload)}({self.args}) -> {self.returns}"


def all_schemas() -> List[Schema]:
    """Every operator schema of the library, in registration order."""
    schemas = []
    for op in OPS:
        for ov in op.overloads:
            schemas.append(Schema(op.name, ov.name, ov.args, "Tensor", True))
    for op in OPS:
        for ov in op.overloads:
            schemas.append(Schema(f"{op.name}_inplace", ov.name, inplace_args(op, ov), "()", True,
                                  decision_roles(op, ov)))
    for f in FOREACH_OPS:
        schemas.append(Schema(f"{f.name}_inplace", "", FOREACH_SCHEMA_ARGS, "()", True))
    for b in BACKWARD_OPS:
        schemas.append(Schema(b.name, b.overload, b.args, b.returns, False))
    return schemas


def public_names() -> List[str]:
    names = [op.name for op in OPS]
    return names + [f"{name}_" for name in names] + [f"{f.name}_" for f in FOREACH_OPS]


