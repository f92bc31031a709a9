"""The Python wrappers ``safe_ops.<op>`` and ``safe_ops.<op>_``, generated at import from the declarations
(``_declarations.py``), as straight-line code: the hot path is what one would write by hand.

``safe_ops.<op>`` is a builtin (``_front``) that passes a plain call to the C fast entry points of the op's
overloads (``csrc/python/fast_entry.h``), which call the op through the dispatcher, and anything else to the generated
Python function; the autograd formula runs in C++, so a call costs about what a torch op costs. Under
torch.compile, or when the fast entry declines (tensor subclasses, torch-function modes, unusual scalars), the
same op is called through ``torch.ops.safe_ops``, which dynamo traces and which handles everything.

An in-place call writes into its target where the in-place decision (``csrc/core/inplace_decision.cpp``
``decide_write``; its action and message in ``_inplace.py``) says that is safe (README: "When does `add_` write in
place?") and otherwise returns the functional result or raises. ``wrapper_source(name)`` shows the code.
"""
from __future__ import annotations

import ast
import linecache
import numbers
from typing import Callable, Dict, List

import torch
from torch import Tensor
from torch.compiler import is_compiling

from . import _C, _foreach, _inplace
from ._declarations import (
    FOREACH_OPS,
    OPS,
    Arg,
    ForeachOp,
    Op,
    Overload,
    all_schemas,
    decision_roles,
    entry_name,
    inplace_params,
)
from ._native import ops
from ._out import write_out

# What the generated code asks on every call: True only while dynamo traces it (then the wrappers take the
# traceable torch.ops path). is_dynamo_compiling is a plain `return False` in eager, a third of is_compiling's cost.
_tracing = getattr(torch.compiler, "is_dynamo_compiling", is_compiling)

_SOURCES: Dict[str, str] = {}
_SELECTORS: Dict[str, Callable] = {}


def _python_params(op: Op, params: tuple) -> str:
    """The wrapper's parameter list: schema order, defaults from any overload, keyword-only as the first."""
    first = op.overloads[0].parsed()
    defaults: Dict[str, str] = {}
    for ov in op.overloads:
        for name, arg in zip(op.params, ov.parsed()):
            if arg.default is not None:
                defaults.setdefault(name, arg.default)
    out: List[str] = []
    star = False
    offset = len(params) - len(op.params)  # the in-place target, if it leads
    for i, name in enumerate(params):
        arg = first[i - offset] if i >= offset else None
        if arg is not None and arg.kwarg_only and not star:
            out.append("*")
            star = True
        out.append(f"{name}={defaults[name]}" if name in defaults else name)
    return ", ".join(out)


def _slow_value(arg: Arg, name: str) -> str:
    # torch.ops wants lists for list arguments; the fast entries take any list or tuple.
    if arg.type == "Tensor[]":
        return f"list({name})"
    if arg.type == "float[]?":
        return f"None if {name} is None else [float(w) for w in {name}]"
    return name


def _slow_call(op_path: str, args: List[Arg], names: List[str]) -> str:
    parts = []
    for arg, name in zip(args, names):
        value = _slow_value(arg, name)
        parts.append(f"{arg.name}={value}" if arg.kwarg_only else value)
    return f"{op_path}({', '.join(parts)})"


def _overload_path(name: str, ov: Overload) -> str:
    return f"ops.{name}.{ov.name or 'default'}"


def _tuple(items: List[str]) -> str:
    return "(" + "".join(f"{i}, " for i in items) + ")"


def _branches(op: Op, body: Callable[[Overload], List[str]]) -> List[str]:
    """One branch per overload, in declaration order: `if <when>:` and its body, the unconditional one last."""
    lines: List[str] = []
    for ov in op.overloads:
        if ov.when == "True":
            return lines + ["    " + line for line in body(ov)]
        lines.append(f"    if {ov.when}:")
        lines += ["        " + line for line in body(ov)]
    return lines


def _number_tensor(number, other) -> Tensor:
    """A Python number in place of `input` as the 0-dim tensor that promotes with `other` as torch's wrapped
    number does: of torch.result_type(other, number)."""
    if isinstance(other, Tensor):
        return torch.tensor(number, dtype=torch.result_type(other, number))
    return torch.tensor(number)


def _number_checks(name: str, ov: Overload, names: List[str]) -> List[str]:
    """Off the fast path: torch's TypeError for a number argument that is not a number (the schema cast of
    torch.ops would raise a RuntimeError)."""
    return [f"_check_number({name!r}, {arg.name!r}, {p})" for arg, p in zip(ov.parsed(), names) if arg.type == "Scalar"]


def _check_number(name: str, arg: str, value) -> None:
    if not isinstance(value, _NUMBERS):
        raise TypeError(f"{name}(): argument '{arg}' must be Number, not {type(value).__name__}")


def _check_target(name: str, target) -> None:
    if not isinstance(target, Tensor):
        raise TypeError(f"descriptor '{name}' for 'torch._C.TensorBase' objects doesn't apply to a "
                        f"'{type(target).__name__}' object")


_NUMBERS = (numbers.Number, Tensor, torch.SymInt, torch.SymFloat, torch.SymBool)


def _functional_source(op: Op) -> str:
    names = list(op.params)

    def body(ov: Overload) -> List[str]:
        number_input = []
        if op.number_input:  # off the fast path: the C entry declines a number
            call = ", ".join(_keyword_call(op, op.params)[1:])
            number_input = [
                f"if not isinstance({names[0]}, Tensor):",
                f"    return {op.name}(_number_tensor({names[0]}, {names[1]}), {call})",
            ]
        return [
            "if not is_compiling():",
            f"    result = _C.{entry_name(op.name, ov.name)}({', '.join(names)})",
            "    if result is not NotImplemented:",
            "        return result",
            *number_input,
            *_number_checks(op.name, ov, names),
            f"return {_slow_call(_overload_path(op.name, ov), ov.parsed(), names)}",
        ]

    params = _python_params(op, op.params)
    params += ", out=None" if "*" in params.split(", ") else ", *, out=None"
    call = ", ".join(_keyword_call(op, op.params))
    out = [
        "    if out is not None:  # torch's out= semantics (_out.py)",
        f"        return _write_out({op.name!r}, out, ({', '.join(names)},), lambda: {op.name}({call}))",
    ]
    early = []
    if _SUBSTITUTE:  # the first overload's C entry before anything else; it declines what it does not take
        first = op.overloads[0]
        early = [
            "    if out is None:",
            f"        result = _C.{entry_name(op.name, first.name)}({', '.join(names)})",
            "        if result is not NotImplemented:",
            "            return result",
        ]
    return "\n".join([f"def {op.name}({params}):"] + early + out + _branches(op, body)) + "\n"


def _inplace_source(op: Op) -> str:
    target = op.inplace_target or op.params[0]
    params = inplace_params(op)
    names = list(params)
    fn = f"{op.name}_"
    lines = [f"def {fn}({_python_params(op, params)}):"]
    for p, arg in zip(op.params, op.overloads[0].parsed()):
        if arg.type == "Tensor[]":  # iterated below; an empty list is an error before anything is decided
            lines += [f"    {p} = list({p})", f"    if not {p}:",
                      f"        raise RuntimeError('safe_ops.{fn} expects a non-empty list of tensors')"]
    # The first C entry, tried before anything else: it writes where the decision says IN_PLACE. An overload
    # whose operand may keep it from the write (grad_reads_target: lerp's tensor weight) is tried in its branch.
    early = next((ov for ov in op.overloads if not ov.grad_reads_target), None) if _SUBSTITUTE else None

    def body(ov: Overload) -> List[str]:
        entry = f"_C.{entry_name(op.name + '_inplace', ov.name)}"
        call_args = ", ".join(names)
        # The parameters after the target with their roles (the target's first), as the C entry reads them.
        roles = decision_roles(op, ov)
        operands = _tuple([n for n in names if n != target])
        fallback = ov.inplace_fallback or f"{op.name}({', '.join(_keyword_call(op, op.params))})"
        schema = ([Arg("Tensor", target, None, False)] if op.inplace_target else []) + ov.parsed()
        slow = _slow_call(_overload_path(op.name + "_inplace", ov), schema, names)
        checked = [] if ov is early else [
            f"result = {entry}({call_args})  # writes and returns {target} where the decision says IN_PLACE",
            "if result is not NotImplemented:",
            "    return result",
        ]
        return [
            # Compiling: functionalization makes the mutation safe and writes graph inputs back, so write
            # whenever the result fits and torch's own in-place op would be allowed.
            "if is_compiling():",
            f"    if _compiled_decision({target}, {operands}, {roles!r}) == _IN_PLACE:",
            f"        {slow}",
            f"        return {target}",
            f"    return _like_target({fallback}, {target})",
            *checked,
            f"_check_target({fn!r}, {target})",
            *_number_checks(fn, ov, list(op.params)),
            f"if _writable({fn!r}, {target}, _decide_write({target}, {operands}, {roles!r}, False)):",
            f"    if {entry}_unchecked({call_args}) is NotImplemented:",
            f"        {slow}",
            f"    return {target}",
            f"return _like_target({fallback}, {target})",
        ]

    head = []
    if early is not None:  # one C call decides and writes
        head = [
            f"    result = _C.{entry_name(op.name + '_inplace', early.name)}({', '.join(names)})",
            "    if result is not NotImplemented:",
            "        return result",
        ]
    return "\n".join(lines + head + _branches(op, body)) + "\n"


def _keyword_call(op: Op, names) -> List[str]:
    # The functional wrapper's keyword-only parameters are those of the first overload (see _python_params).
    out = []
    for name, arg in zip(names, op.overloads[0].parsed()):
        out.append(f"{name}={name}" if arg.kwarg_only else name)
    return out


def _selector_source(op: Op) -> str:
    body = _branches(op, lambda ov: [f"return {_overload_path(op.name, ov)}"])
    return "\n".join([f"def select({_python_params(op, op.params)}):"] + body) + "\n"


def _namespace() -> dict:
    return {
        "torch": torch,
        "Tensor": Tensor,
        "is_compiling": _tracing,
        "_C": _C,
        "ops": ops,
        "_compiled_decision": _inplace.compiled_decision,
        "_decide_write": _C._decide_write,
        "_writable": _inplace.writable,
        "_IN_PLACE": _inplace.Decision.IN_PLACE.value,
        "_like_target": _inplace.like_target,
        "_write_out": write_out,
        "_number_tensor": _number_tensor,
        "_check_number": _check_number,
        "_check_target": _check_target,
    }


def _compile(name: str, source: str, namespace: dict) -> Callable:
    filename = f"<safe_ops generated: {name}>"
    # Tracebacks and inspect.getsource show the generated lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    _SOURCES[name] = source
    return namespace[name.split(".")[-1]]


def _docstring(op: Op, inplace: bool) -> str:
    saves = f"Saved for backward: {op.saves}"
    if not inplace:
        return f"{op.summary}\n\n{saves} Never writes into its inputs."
    target = op.inplace_target or "input"
    return (
        f"{op.summary}\n\nWritten into ``{target}`` when that is safe (then ``{target}`` is returned), else a new "
        f"tensor: rebind the result. Never raises the version-counter or leaf error; under ``torch.no_grad()`` a "
        f"Parameter is written in place or, if a pending backward saved it, InplaceHazardError is raised "
        f"(README: \"When does `add_` write in place?\").\n\n{saves} ``{target}`` itself is never saved."
    )


def _foreach_docstring(fop: ForeachOp) -> str:
    lists = ", ".join(f"``{x}``" for x in fop.lists)
    return (
        f"``safe_ops.{fop.base}_`` for every member of ``tensors``, one fused pass: ``tensors[i]`` updated with\n"
        f"the i-th members of {lists} and ``{fop.number}`` (a number, a list of numbers, or a tensor of per-member\n"
        f"values on the device, never read on the host by the fused pass). Lists of equal length, operands of the\n"
        f"member's shape{' (or, for add, numbers)' if fop.number_members else ''}, one device.\n\n"
        f"Returns the list of results: per member, the member itself where it was written in place, a new tensor\n"
        f"where ``safe_ops.{fop.base}_``'s rules say copy; InplaceHazardError where they say raise (README: \"When\n"
        f"does `add_` write in place?\"). An operand of another floating dtype (an fp32 EMA of a bf16 model) is\n"
        f"computed in opmath and written in the member's dtype. In grad mode a member autograd must record goes\n"
        f"through ``safe_ops.{fop.base}_``. Every member is checked before any is written.\n\n"
        f"Saved for backward: nothing by the fused pass; per-tensor members as ``safe_ops.{fop.base}_``."
    )


# Under torch.compile each C fast entry reads as "declined" (dynamo cannot trace into C): the wrappers may then call
# an entry first, with no is_compiling() check before it, and dynamo still takes the torch.ops path.
_SUBSTITUTE = hasattr(torch.compiler, "substitute_in_graph")


def _declines(*args):
    return NotImplemented


def _register_substitutes() -> None:
    for schema in all_schemas():
        if not schema.fast_entry:
            continue
        entry = getattr(_C, entry_name(schema.name, schema.overload))
        torch.compiler.substitute_in_graph(entry, skip_signature_check=True)(_declines)


_REQUIRED = object()


def _front(op: Op, functional: Callable) -> Callable:
    """``safe_ops.<op>`` as a builtin (csrc/python/module.cpp): Python calls the op's fast entries with no Python
    frame in between, and `functional` for anything they decline; dynamo traces `functional`."""
    names, defaults, npositional = [], [], None
    for part in _python_params(op, op.params).split(", "):
        if part == "*":
            npositional = len(names)
            continue
        name, _, default = part.partition("=")
        names.append(name)
        defaults.append(ast.literal_eval(default) if default else _REQUIRED)
    signature = _python_params(op, op.params)
    signature += ", out=None" if npositional is not None else ", *, out=None"
    doc = f"{op.name}({signature})\n--\n\n{functional.__doc__}"
    entries = tuple(getattr(_C, entry_name(op.name, ov.name)) for ov in op.overloads)
    front = _C._make_front(op.name, doc, tuple(names), len(names) if npositional is None else npositional,
                           tuple(defaults), entries, functional, _REQUIRED)
    torch.compiler.substitute_in_graph(front, skip_signature_check=True)(functional)
    front_wrapped[op.name] = functional
    return front


# The Python wrapper behind each builtin ``safe_ops.<op>`` (what dynamo traces, what wrapper_source shows).
front_wrapped: Dict[str, Callable] = {}


def build(namespace_out: dict) -> None:
    """Generates every wrapper into `namespace_out` (the package's namespace)."""
    if _SUBSTITUTE:
        _register_substitutes()
    namespace = _namespace()
    for op in OPS:
        functional = _compile(op.name, _functional_source(op), namespace)
        functional.__doc__ = _docstring(op, inplace=False)
        functional.__module__ = "safe_ops"
        namespace_out[op.name] = _front(op, functional) if _SUBSTITUTE else functional
    for op in OPS:
        inplace = _compile(f"{op.name}_", _inplace_source(op), namespace)
        inplace.__doc__ = _docstring(op, inplace=True)
        inplace.__module__ = "safe_ops"
        namespace_out[f"{op.name}_"] = inplace
        _SELECTORS[op.name] = _compile(f"{op.name}.select", _selector_source(op), dict(namespace))
    for fop in FOREACH_OPS:
        run = _foreach.make(fop, namespace_out[f"{fop.base}_"])
        wrapper = _compile(f"{fop.name}_", _foreach.foreach_source(fop), {"_run": run})
        wrapper.__doc__ = _foreach_docstring(fop)
        wrapper.__module__ = "safe_ops"
        namespace_out[f"{fop.name}_"] = wrapper


def overload_for(name: str, *args, **kwargs):
    """The torch.ops overload that ``safe_ops.<name>(*args, **kwargs)`` calls."""
    return _SELECTORS[name](*args, **kwargs)


def wrapper_source(name: str) -> str:
    """The generated code of ``safe_ops.<name>`` (e.g. "add", "add_", "add.select")."""
    return _SOURCES[name]
