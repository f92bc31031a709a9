"""Every safe_ops op, declared once (ATen's native_functions.yaml, small).

From each declaration come, with no other list anywhere:
- the operator schemas of the functional op, its in-place kernel (``<name>_inplace``, first argument
  ``Tensor(a!)``) and the backward ops, the C++ operator names the op code registers and calls, the kernel dtypes
  and the defer-to-torch rule (generated C++ in ``csrc/generated/``, written by ``csrc/codegen/generate.py``:
  ``make generate``, and by setup.py before each build; ``tests/test_generated.py`` fails when they are stale);
- the C fast entry points, one per overload (same generated C++);
- the Python wrappers ``safe_ops.<name>``, ``safe_ops.<name>_`` and ``safe_ops.foreach_<name>_`` with their
  overload choice (``safe_ops/_generated.py``, written by ``csrc/codegen/python_wrappers.py``; bound with their
  docstrings by ``_wrappers.py``);
- the fake kernels (``_fake.py``), vmap rules (``_vmap.py``) and DTensor sharding rules (``_distributed.py``) of
  every op, in-place kernel and backward op, computed at import from the fields here (none of those modules names an
  op), ``__all__``; the test and benchmark table (``tests/op_table/<name>.py`` adds samples and references per op, and
  ``tests/test_op_table.py`` fails when an op, overload, backward or foreach op has none).

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
    # The Python parameter whose being a Tensor selects this overload; "" for the last overload, taken otherwise
    # (add(input, other): "other" for add.Tensor, and add.Scalar for a number `other`).
    selected_by_tensor: str = ""
    # The operand whose gradient reads the original target (lerp's tensor weight): while it requires grad in grad
    # mode the in-place variant never writes (it returns the functional result). Role 'g' in inplace_roles.
    grad_reads_target: str = ""
    # The sets of tensor operands (Python parameter names) the result is jointly linear in, the other operands held
    # fixed: Partial(sum) (or avg) on every operand of a set and Replicate on the rest gives a Partial result. DTensor
    # keeps Partial without communication where one set holds every pointwise tensor operand (_distributed.py);
    # an op multiplying two tensors declares them in separate sets. Empty: affine or nonlinear (add.Scalar adds a
    # constant).
    linear_in: Tuple[Tuple[str, ...], ...] = ()

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
    # Name of the in-place target when the functional op has no `self` (accumulate_(out, tensors, ...)). Its
    # out-of-place result (when the write is not safe) is the functional op with the target leading the list
    # operand at coefficient 1.
    inplace_target: str = ""
    # torch has an op of this name and schema (aten::<name>, in place aten::<name>_): it computes the calls
    # DEFER_TO_TORCH says the kernels do not, with torch's own autograd (csrc/core/twin.h, safe_ops/_twin.py).
    # accumulate has none: those calls raise.
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

    def decision_roles(self, noperands: int) -> str:
        """A member and its tensor operands as the in-place decision reads them (csrc/core/inplace_decision.h):
        every operand joins the shape, and an operand of another floating dtype is cast into the member ('t')."""
        return "t" + "o" * noperands


@dataclass(frozen=True)
class BackwardOp:
    """An op called only by autograd Nodes (fused backward passes), with CPU/CUDA/fake kernels so that
    torch.compile can trace a backward."""

    name: str
    overload: str
    args: str
    returns: str
    # What it computes, from which come its fake kernel (_fake.py), vmap rule (_vmap.py) and sharding rule
    # (_distributed.py); none of them names a backward op:
    # "masked": gradients of a pointwise op, one per output_mask entry (None where unset), each pointwise over grad
    #   and the operands passed, at their broadcast shape, in grad's dtype;
    # "scale": out[k] = scales[k]·grad, one tensor like grad per scale (float[] scales, or a 1-D tensor of them);
    # "dot": the K dot products Σ grad·tensors[k], a float64 vector (sharded operands give partial sums).
    kind: str
    linear_in: Tuple[Tuple[str, ...], ...] = ()  # as Overload.linear_in, over the schema argument names


# The dtypes the kernels compute (in at::opmath_type, rounding once), by torch's names: the one list. The C++ op code
# reads it from csrc/generated/kernel_dtypes.h (safe_ops::is_kernel_dtype), Python from here (_twin.py, _foreach.py).
KERNEL_DTYPES: Tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class DeferRule:
    """When a call of an op with a torch twin (``Op.twin``) goes to torch's op of the same schema instead of the
    kernels. One rule, applied in the dispatcher by csrc/core/twin.h (``TwinCheck``, reading the generated
    csrc/generated/kernel_dtypes.h) and by the fake kernels through safe_ops/_twin.py (``uses_twin``, reading this).
    A call of an op without a twin that the rule would defer raises (a TypeError for a dtype)."""

    dtypes: Tuple[str, ...]  # a tensor operand of a dtype not listed defers
    numbers: Tuple[str, ...]  # a Python number of these kinds defers ("complex", "bool")
    inplace_mixed: bool  # in place: an operand of another dtype than the target defers (torch casts into it)
    # An op that does not promote (``Op.dtype == "first"``): operands of several dtypes defer (torch's lerp takes a
    # 0-dim weight of another dtype, and raises for the rest).
    unpromoted_mixed: bool
    # Operands of several dtypes, one of them requiring grad in grad mode: torch's backward formulas round operand
    # products in the operands' own dtypes, so only torch's op gives torch's gradients.
    recorded_mixed: bool


DEFER_TO_TORCH = DeferRule(KERNEL_DTYPES, ("complex", "bool"), True, True, True)

OPS: Tuple[Op, ...] = (
    Op(
        "add",
        ("input", "other", "alpha"),
        (
            Overload("Tensor", "Tensor self, Tensor other, *, Scalar alpha=1", selected_by_tensor="other",
                     linear_in=(("input", "other"),)),
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
            Overload("Tensor", "Tensor self, Tensor other, *, Scalar alpha=1", selected_by_tensor="other",
                     linear_in=(("input", "other"),)),
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
                selected_by_tensor="weights",
                linear_in=(("tensors",),),
            ),
            Overload(
                "",
                "Tensor[] tensors, float[]? weights=None",
                linear_in=(("tensors",),),
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
        (
            Overload("", "Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1",
                     linear_in=(("input", "tensor1"), ("input", "tensor2"))),
        ),
        "``input + value * tensor1 * tensor2``, like :func:`torch.addcmul`.",
        "``tensor2`` only if ``tensor1`` needs a gradient, ``tensor1`` only if ``tensor2`` does, nothing for\n"
        "``input``.",
        twin=True,
    ),
    Op(
        "addcdiv",
        ("input", "tensor1", "tensor2", "value"),
        (
            Overload("", "Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1",
                     linear_in=(("input", "tensor1"),)),
        ),
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
                selected_by_tensor="weight",
                # The weight's gradient reads the original input, which the write would destroy.
                grad_reads_target="weight",
                linear_in=(("input", "end"),),
            ),
            Overload("Scalar", "Tensor self, Tensor end, Scalar weight", linear_in=(("input", "end"),)),
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
    BackwardOp("scale_many", "", "Tensor grad, float[] scales", "Tensor[]", "scale", (("grad",),)),
    BackwardOp("scale_many", "weights_tensor", "Tensor grad, Tensor scales", "Tensor[]", "scale", (("grad",),)),
    BackwardOp("dot_many", "", "Tensor grad, Tensor[] tensors", "Tensor", "dot", (("grad",), ("tensors",))),
    BackwardOp(
        "addcmul_backward",
        "",
        "Tensor grad, Tensor? tensor1, Tensor? tensor2, Scalar value, bool[2] output_mask",
        "(Tensor, Tensor)",
        "masked",
        (("grad",),),
    ),
    BackwardOp(
        "addcdiv_backward",
        "",
        "Tensor grad, Tensor? tensor1, Tensor? tensor2, Scalar value, bool[2] output_mask",
        "(Tensor, Tensor)",
        "masked",
        (("grad",),),
    ),
    BackwardOp(
        "lerp_backward",
        "",
        "Tensor grad, Tensor? self, Tensor? end, Tensor? weight, bool[3] output_mask",
        "(Tensor, Tensor, Tensor)",
        "masked",
        (("grad",),),
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


