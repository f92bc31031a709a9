"""``safe_ops.foreach_<op>_``: ``safe_ops.<op>_`` over whole lists (declared in ``_declarations.FOREACH_OPS``).

Per member, the in-place contract of ``safe_ops.<op>_``: the one in-place decision (``decide_write`` in
``csrc/core/inplace_decision.cpp``, the member its target and the member's operands its operands 'o'; the action and
message in ``_inplace.py``): written in place where it says so, a new tensor where it says copy, InplaceHazardError
where it says raise. The members that are writes
without autograd (no_grad, or nothing requires grad) go through one fused kernel ``foreach_<op>_inplace``; in grad
mode a member that autograd must record goes through ``safe_ops.<op>_`` itself, so a member a node saved is never
corrupted. The result dtype of a member is the member's dtype (an operand may have another floating dtype: it is
computed in opmath and rounded once, as torch's in-place ops round into ``self``). Every member is checked, and every
rule asked, before any member is written.
"""
from __future__ import annotations

import sys
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.compiler import is_compiling

from . import _C, _inplace
from ._declarations import KERNEL_DTYPES, OPS, ForeachOp, entry_name
from ._native import ops

_SUPPORTED = tuple(getattr(torch, name) for name in KERNEL_DTYPES)
_NUMBER = (int, float)  # bool is an int; a plain tuple keeps torch.compile tracing


def _numbers(value, n: int, what: str, name: str) -> Tuple[List[float], Optional[Tensor]]:
    """The per-member number as (host values, None) or ([], a 1-D tensor of them on the device)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(n)
        if value.shape != (n,):
            raise RuntimeError(f"safe_ops.{name}: a tensor `{what}` holds one value per member: expected shape "
                               f"({n},), got {tuple(value.shape)}")
        return [], value
    if isinstance(value, _NUMBER):
        return [float(value)] * n, None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"safe_ops.{name}: `{what}` must be a number, a list of numbers or a tensor, got "
                        f"{type(value).__name__}")
    if len(value) != n:
        raise RuntimeError(f"safe_ops.{name}: expected {n} values of `{what}` (one per member), got {len(value)}")
    for v in value:
        if not isinstance(v, _NUMBER):  # torch: TypeError for a non-number scalar
            raise TypeError(f"safe_ops.{name}: `{what}` must be a number, a list of numbers or a tensor, got a "
                            f"list holding a {type(v).__name__}")
    return [float(v) for v in value], None


def _check_member(name: str, i: int, t: Tensor, others: Sequence, device: torch.device) -> None:
    """The checks the fused kernel makes (csrc/ops/foreach.cpp), for the members that take the per-tensor path too."""
    if not isinstance(t, Tensor):
        raise TypeError(f"safe_ops.{name}: member {i} is a {type(t).__name__}, not a tensor")
    for x in (t, *(o for o in others if isinstance(o, Tensor))):
        if x.device != device:
            raise RuntimeError(f"safe_ops.{name}: expected every tensor on one device, {device}, but member {i} "
                               f"has one on {x.device}")
        if x.dtype not in _SUPPORTED:
            raise TypeError(f"safe_ops.{name}: supports float16, bfloat16, float32 and float64 tensors, but member "
                            f"{i} has a {x.dtype} tensor. Use the torch op for other dtypes.")
        if x.shape != t.shape:
            raise RuntimeError(f"safe_ops.{name}: an operand of member {i} has shape {tuple(x.shape)}, the member "
                               f"{tuple(t.shape)} (the shapes must be equal)")


def _is_dtensor(t) -> bool:
    # Cheap: torch.distributed.tensor is imported by whoever made a DTensor.
    dt = sys.modules.get("torch.distributed.tensor")
    return dt is not None and isinstance(t, dt.DTensor)


def _same_layout(tensors, lists) -> bool:
    """Every member and operand a DTensor of the member's mesh, placements and shape, none Partial: the foreach
    op then is the same op on each rank's local shards, with no communication."""
    for i, t in enumerate(tensors):
        if not _is_dtensor(t) or any(p.is_partial() for p in t.placements):
            return False
        for x in lists:
            o = x[i]
            if not (_is_dtensor(o) and o.device_mesh == t.device_mesh and o.placements == t.placements
                    and o.shape == t.shape):
                return False
    return True


def _distributed_members(targets, operands) -> bool:
    return len(targets) > 0 and _is_dtensor(targets[0])  # torch 2.11's dynamo cannot trace bool(list)


def make(fop: ForeachOp, single: Callable) -> Callable:
    """The wrapper of one foreach op; `single` is ``safe_ops.<base>_``, the per-member path."""
    name = f"{fop.name}_"
    nlists = len(fop.lists)
    fused_entry = getattr(_C, entry_name(f"{fop.name}_inplace", ""))
    fused_op = getattr(ops, f"{fop.name}_inplace").default
    same_dtype = next(op for op in OPS if op.name == fop.base).dtype == "first"
    writable, compiled_decision, decide = _inplace.writable, _inplace.compiled_decision, _C._decide_write
    all_plain, any_tangent = _C._foreach_plain, _C._any_tangent
    in_place = _inplace.Decision.IN_PLACE.value
    roles = fop.decision_roles(nlists)

    def plain(t: Tensor, others: tuple) -> bool:
        # The fused kernel's case: the decision says in place, and every operand has the member's dtype and shape.
        dtype, shape = t.dtype, t.shape
        same = all(o.dtype == dtype and o.shape == shape for o in others)
        return same and decide(t, others, roles, False) == in_place

    def fused(targets: list, operands: list, values: list, device_values: Optional[Tensor]) -> None:
        if _distributed_members(targets, operands):  # DTensors of one layout: the fused kernel on the local shards
            targets, operands = [t._local_tensor for t in targets], [o._local_tensor for o in operands]
        if is_compiling() or fused_entry(targets, operands, values, device_values) is NotImplemented:
            fused_op(targets, operands, values, device_values)

    def per_member(t: Tensor, others: tuple, value) -> Tensor:
        if fop.number_keyword:
            return single(t, *others, **{fop.number_keyword: value})
        return single(t, *others, value)

    def run(tensors, lists: tuple, number):
        # The common case, decided in one C call: every member a plain in-place write autograd need not record.
        if not is_compiling() and type(number) in (float, int):
            if all_plain(tensors, lists, torch.is_grad_enabled(), roles):
                n = len(tensors)
                operands = lists[0] if nlists == 1 else [o for m in zip(*lists) for o in m]
                fused(tensors, operands, [float(number)] * n, None)
                return tensors
        if tensors and _is_dtensor(tensors[0]) and not _same_layout(tensors, lists):
            # DTensors of different layouts: the per-tensor op on each member (its sharding rule redistributes).
            values, device_values = _numbers(number, len(tensors), fop.number, name)
            return [per_member(t, m, float(device_values[i]) if device_values is not None else values[i])
                    for i, (t, m) in enumerate(zip(tensors, zip(*lists)))]
        tensors = list(tensors)
        n = len(tensors)
        if n == 0:
            raise RuntimeError(f"safe_ops.{name}: expects a non-empty list of tensors")
        lists = [[x] * n if fop.number_members and isinstance(x, _NUMBER) else list(x) for x in lists]
        for what, x in zip(fop.lists, lists):
            if len(x) != n:  # torch: RuntimeError for lists of different lengths
                raise RuntimeError(f"safe_ops.{name}: `{what}` has {len(x)} members, `tensors` {n}")
        values, device_values = _numbers(number, n, fop.number, name)
        members = list(zip(*lists))  # the others of each member
        grad = torch.is_grad_enabled()

        # The common case, checked cheaply: every member a plain in-place write that autograd need not record.
        tensors_only = not fop.number_members or all(isinstance(o, Tensor) for m in members for o in m)
        if not is_compiling() and tensors_only and all(map(plain, tensors, members)) and not (
            grad and any(t.requires_grad or any(o.requires_grad for o in m) for t, m in zip(tensors, members))
        ) and not any(any_tangent(t, *m) for t, m in zip(tensors, members)):
            fused(tensors, lists[0] if nlists == 1 else [o for m in members for o in m], values, device_values)
            return tensors

        device = tensors[0].device if isinstance(tensors[0], Tensor) else None
        results = list(tensors)
        targets: List[Tensor] = []
        operands: List[Tensor] = []
        fused_at: List[int] = []
        singles: List[int] = []
        for i, (t, m) in enumerate(zip(tensors, members)):
            _check_member(name, i, t, m, device)
            tensor_others = tuple(o for o in m if isinstance(o, Tensor))
            needs_graph = grad and (t.requires_grad or any(o.requires_grad for o in tensor_others))
            if is_compiling():  # counts cannot be read: the per-tensor variants' compile rule, per member
                if needs_graph or len(tensor_others) < nlists or compiled_decision(t, m, roles) != in_place:
                    singles.append(i)
                    continue
                targets.append(t)
                operands += m
                fused_at.append(i)
                continue
            # Forward-mode tangents, in any grad mode: the per-tensor op computes them, the fused kernel does not.
            needs_graph = needs_graph or any_tangent(t, *tensor_others)
            if needs_graph or len(tensor_others) < nlists:
                if needs_graph and same_dtype and any(o.dtype != t.dtype for o in tensor_others):
                    raise RuntimeError(f"safe_ops.{name}: member {i} needs autograd, and {fop.base} with a gradient "
                                       f"needs operands of the member's dtype {t.dtype}")
                # Asked now so that a hazard raises before anything is written; the per-tensor op asks again.
                writable(name, t, decide(t, tensor_others, fop.decision_roles(len(tensor_others)), False))
                singles.append(i)
                continue
            target = t if writable(name, t, decide(t, m, roles, False)) else t.clone()
            results[i] = target
            targets.append(target)
            operands += m
            fused_at.append(i)
        # Fused first: its kernel checks what is left (memory overlap) before writing any member.
        if targets:
            if device_values is None:
                fused(targets, operands, [values[i] for i in fused_at], None)
            else:
                fused(targets, operands, [], device_values[fused_at])
        for i in singles:
            # A per-member tensor of numbers is read on the host here, for these members only.
            value = float(device_values[i]) if device_values is not None else values[i]
            results[i] = per_member(tensors[i], members[i], value)
        return results

    return run


def foreach_source(fop: ForeachOp) -> str:
    """The public signature of ``safe_ops.foreach_<base>_`` as Python source: torch's parameter names."""
    lists = ", ".join(fop.lists)
    number = fop.number if fop.number_default is None else f"*, {fop.number}={fop.number_default}"
    return (f"def {fop.name}_(tensors, {lists}, {number}):\n"
            f"    return _run(tensors, ({lists},), {fop.number})\n")
