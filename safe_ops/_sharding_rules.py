"""The sharding rules of the safe_ops operators (``_distributed.py`` registers them), written once for both of its
registration paths: ``shard`` is Shard or torch's _ShardingPlaceholder, and each rule is a list of placements, the
outputs' first, then one per tensor argument in pytree order."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def _leaves(x) -> list:
    """The tensor arguments in x, in pytree order: TensorMeta (single-dim strategies), DTensorSpec (register_sharding)
    or OpStrategy (op strategies), lists and TupleStrategy flattened."""
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
    from torch.distributed.tensor._op_schema import OpStrategy, TupleStrategy

    if isinstance(x, (TensorMeta, DTensorSpec, OpStrategy)):
        return [x]
    if isinstance(x, TupleStrategy):
        x = x.children
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _leaves(item)]
    return []


def _source_dim(shape: Sequence[int], arg: Sequence[int], d: int) -> int:
    """The dimension of an operand of shape `arg` that broadcasts to dimension d of `shape`, -1 where it broadcasts
    (torch's infer_broadcast_dims_map)."""
    md = d - (len(shape) - len(arg))
    if md < 0 or (arg[md] == 1 and shape[d] != 1):
        return -1
    return md


def _pointwise(roles: str, n_out: int, linear: bool) -> Callable:
    """rules(shard, args): each parameter's role ('o', 'l', 't' pointwise operands, 'c' a coefficient tensor,
    Replicate; anything else not a tensor) and n_out outputs of the broadcast shape."""
    from torch.distributed.tensor.placement_types import Partial, Replicate

    def rules(shard, args) -> list:
        groups = [(role, [leaf.shape for leaf in _leaves(a)]) for role, a in zip(roles, args)]
        groups = [(role, shapes) for role, shapes in groups if shapes and role in "oltc"]
        shape = torch.broadcast_shapes(*[s for role, shapes in groups if role != "c" for s in shapes])
        out = []
        for d in range(len(shape)):
            rule = [shard(d)] * n_out
            for role, shapes in groups:
                for s in shapes:
                    md = -1 if role == "c" else _source_dim(shape, s, d)
                    rule.append(shard(md) if md >= 0 else Replicate())
            out.append(rule)
        if linear:
            for reduce in ("sum", "avg"):
                inputs = [Replicate() if role == "c" else Partial(reduce) for role, shapes in groups for _ in shapes]
                out.append([Partial(reduce)] * n_out + inputs)
        return out

    return rules


def _partial_rows(n_out: int, leaves: Sequence[int], linear_in: Sequence[Sequence[int]]) -> list:
    """The rows that keep Partial: for each declared set of arguments the result is linear in (argument positions;
    BackwardOp.linear_in), Partial(reduce) on the outputs and on those arguments' tensors, Replicate on the other
    tensors. leaves: the number of tensors of each argument."""
    from torch.distributed.tensor.placement_types import Partial, Replicate

    rows = []
    for reduce in ("sum", "avg"):
        for positions in linear_in:
            rows.append([Partial(reduce)] * n_out + [Partial(reduce) if i in positions else Replicate()
                                                     for i, n in enumerate(leaves) for _ in range(n)])
    return rows


def _dot(linear_in: Sequence[Sequence[int]]) -> Callable:
    """A "dot" backward op (grad, tensors) -> K dot products Σ grad * tensors[k]: sharded operands give partial sums;
    Partial kept as declared (linear in grad, and in the tensors)."""
    from torch.distributed.tensor.placement_types import Partial, Replicate

    def rules(shard, args) -> list:
        grad, tensors = args[0].shape, [t.shape for t in _leaves(args[1])]
        out = []
        for d in range(len(grad)):
            out.append([Partial("sum"), shard(d)]
                       + [shard(md) if (md := _source_dim(grad, t, d)) >= 0 else Replicate() for t in tensors])
        return out + _partial_rows(1, [1, len(tensors)], linear_in)

    return rules


def _scale(linear_in: Sequence[Sequence[int]]) -> Callable:
    """A "scale" backward op (grad, scales) -> [scales[k] * grad]: as many outputs as scales, each laid out like grad;
    a tensor of scales is Replicate; Partial kept as declared (linear in grad)."""
    from torch.distributed.tensor.placement_types import Replicate

    def rules(shard, args) -> list:
        grad, scales = args[0], args[1]
        tensor_scales = bool(_leaves(scales))
        n = _scale_outputs(args)
        tail = [Replicate()] if tensor_scales else []
        out = [[shard(d)] * (n + 1) + tail for d in range(len(grad.shape))]
        return out + _partial_rows(n, [1, int(tensor_scales)], linear_in)

    return rules


def _scale_outputs(args) -> int:
    scales = args[1]
    return scales.shape[0] if _leaves(scales) else len(scales)


def _foreach(name: str, linear: bool) -> Callable:
    """foreach_<op>_inplace(members, operands (member-major), scalars, scalar_tensor): each member keeps its
    placement and its operands take it (they have its shape); the tensor of numbers is Replicate. A Partial member
    of an op not linear in its operands cannot be written in place: torch's in-place error."""
    from torch.distributed.tensor.placement_types import Replicate

    def rules(shard, args) -> list:
        members, operands = _leaves(args[0]), _leaves(args[1])
        tail = [Replicate()] * len(_leaves(args[3:]))
        per = len(operands) // max(len(members), 1)
        placements = [m.strategies[0].output_spec.placements for m in members]
        out = []
        for dim in range(len(placements[0]) if placements else 0):
            ps = [p[dim] for p in placements]
            for p in ps:
                if p.is_partial() and not linear:
                    raise RuntimeError(
                        f"safe_ops.{name}: in-place operations that require placement changes are not supported. "
                        f"A member has placement {p}, but no valid strategy preserves it (the op is not linear in "
                        f"its operands). Please use the out-of-place version of this operation instead.")
            out.append(ps + [p for p in ps for _ in range(per)] + tail)
        return out

    return rules


def _replicate_rule(n: int) -> list:
    from torch.distributed.tensor.placement_types import Replicate

    return [Replicate()] * n


def _partial_rules(roles: str, n_out: int, linear: bool) -> list:
    from torch.distributed.tensor.placement_types import Partial

    if not linear:
        return []
    n_tensors = sum(r in "ot" for r in roles)
    return [[Partial(reduce)] * (n_out + n_tensors) for reduce in ("sum", "avg")]
