"""Binds the public ``safe_ops.<op>``, ``safe_ops.<op>_`` and ``safe_ops.foreach_<op>_`` to the generated wrappers
(``_generated.py``, written from the declarations by ``csrc/codegen/python_wrappers.py``; open it to read what a
call does).

``safe_ops.<op>`` is a builtin (``_C._make_front``, csrc/python/module.cpp) that passes a plain call to the C fast
entry points of the op's overloads (csrc/python/fast_entry.h), which call the op through the dispatcher, and
anything they decline to the generated Python function; the autograd formula runs in C++, so a call costs about
what a torch op costs. Under torch.compile dynamo traces the generated function (``substitute_in_graph``), where
every C entry reads as declined, and the ops are called through ``torch.ops.safe_ops``.

An in-place call writes into its target where the in-place decision (``csrc/core/inplace_decision.cpp``
``decide_write``; its action and message in ``_inplace.py``) says that is safe (README: "When does `add_` write in
place?") and otherwise returns the functional result or raises.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict

import torch

from . import _C, _generated
from ._declarations import FOREACH_OPS, OPS, ForeachOp, Op, all_schemas, entry_name


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


def _declines(*args):
    return NotImplemented


def _register_substitutes() -> None:
    """Under torch.compile each C fast entry reads as declined (dynamo cannot trace into C), so the generated code
    calls entries with no is_compiling() check before them and dynamo still takes the torch.ops path."""
    for schema in all_schemas():
        if schema.fast_entry:
            entry = getattr(_C, entry_name(schema.name, schema.overload))
            torch.compiler.substitute_in_graph(entry, skip_signature_check=True)(_declines)


_REQUIRED = object()


def _front(op: Op, functional: Callable) -> Callable:
    """``safe_ops.<op>`` as a builtin: Python calls the op's fast entries with no Python frame in between, and
    `functional` (the generated wrapper) for anything they decline; dynamo traces `functional`."""
    signature = str(inspect.signature(functional))[1:-1]
    names, defaults, npositional = [], [], None
    for p in inspect.signature(functional).parameters.values():
        if p.name == "out":
            continue
        if p.kind is p.KEYWORD_ONLY and npositional is None:
            npositional = len(names)
        names.append(p.name)
        defaults.append(_REQUIRED if p.default is p.empty else p.default)
    doc = f"{op.name}({signature})\n--\n\n{functional.__doc__}"
    entries = tuple(getattr(_C, entry_name(op.name, ov.name)) for ov in op.overloads)
    front = _C._make_front(op.name, doc, tuple(names), len(names) if npositional is None else npositional,
                           tuple(defaults), entries, functional, _REQUIRED)
    torch.compiler.substitute_in_graph(front, skip_signature_check=True)(functional)
    return front


# The generated Python function behind each builtin ``safe_ops.<op>`` (what dynamo traces).
front_wrapped: Dict[str, Callable] = {}


def build(namespace_out: dict) -> None:
    """Binds every public op into `namespace_out` (the package's namespace)."""
    _register_substitutes()
    for op in OPS:
        functional = getattr(_generated, op.name)
        functional.__doc__ = _docstring(op, inplace=False)
        functional.__module__ = "safe_ops"
        front = _front(op, functional)
        front_wrapped[op.name] = functional
        # The generated code's own calls of <op> (the in-place fallback, out=, a number input) take the front too.
        setattr(_generated, op.name, front)
        namespace_out[op.name] = front
    for op in OPS:
        inplace = getattr(_generated, f"{op.name}_")
        inplace.__doc__ = _docstring(op, inplace=True)
        inplace.__module__ = "safe_ops"
        namespace_out[f"{op.name}_"] = inplace
    for fop in FOREACH_OPS:
        wrapper = getattr(_generated, f"{fop.name}_")
        wrapper.__doc__ = _foreach_docstring(fop)
        wrapper.__module__ = "safe_ops"
        namespace_out[f"{fop.name}_"] = wrapper


def overload_for(name: str, *args, **kwargs):
    """The torch.ops overload that ``safe_ops.<name>(*args, **kwargs)`` calls."""
    return getattr(_generated, f"select_{name}")(*args, **kwargs)


def wrapper_source(name: str) -> str:
    """The generated code of ``safe_ops.<name>`` ("add", "add_", "foreach_add_"; "add.select": its overload
    choice), as written in safe_ops/_generated.py."""
    if name.endswith(".select"):
        name = f"select_{name[: -len('.select')]}"
    fn = front_wrapped.get(name) or getattr(_generated, name)
    return inspect.getsource(fn)


