"""vmap batching rules for every declared op (``torch.library.register_vmap``): ``torch.vmap`` runs the fused
kernel once over the whole batch instead of torch's per-sample fallback loop (and its performance warning).

The ops are pointwise with broadcasting, so one rule serves them all: each batched tensor operand gets its batch
dimension moved to the front and size-1 dimensions after it, so that its per-sample dimensions line up with the
unbatched operands' under broadcasting; the op then broadcasts over the batch. ``accumulate`` does the same for
every tensor of its list. A batched weights tensor (one weight vector per sample) cannot be one fused call; it is
computed with torch ops. An in-place op writes through the same aligned view of its batched target. The backward
ops have rules too, one per declared kind (``BackwardOp.kind``); no op is named here.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor

from . import _native  # noqa: F401  (the ops must be registered first)
from ._declarations import BACKWARD_OPS, OPS, Op, Overload, qualified


def _logical_dim(t: Tensor, bdim: Optional[int]) -> int:
    return t.dim() - (0 if bdim is None else 1)


def _align(t: Tensor, bdim: Optional[int], rank: int) -> Tensor:
    """A batched tensor as (B, 1, ..., 1, *per-sample shape) with `rank` dims after the batch: a view."""
    if bdim is None:
        return t
    t = t.movedim(bdim, 0)
    for _ in range(rank - (t.dim() - 1)):
        t = t.unsqueeze(1)
    return t


def _flat(args: Sequence, dims: Sequence, tensor_positions: Sequence[int]):
    """(tensor, bdim) of every elementwise tensor operand, list members included."""
    for i in tensor_positions:
        if isinstance(args[i], (list, tuple)):
            yield from zip(args[i], dims[i])
        elif isinstance(args[i], Tensor):
            yield args[i], dims[i]


def _stand_in(t: Tensor, bdim: Optional[int]) -> Tensor:
    """A meta tensor of one sample's shape and dtype (no data, no device work)."""
    shape = t.shape if bdim is None else t.shape[:bdim] + t.shape[bdim + 1 :]
    return torch.empty(shape, dtype=t.dtype, device="meta")


def _weighted_sum(tensors: List[Tensor], weights: Tensor, dtype: torch.dtype, rank: int) -> Tensor:
    """Σ weights[:, i]·tensors[i] for per-sample weights (B, K), in float32 at least (as the kernels' opmath)."""
    compute = torch.promote_types(dtype, torch.float32)
    total = None
    for i, x in enumerate(tensors):
        w = weights[:, i].reshape((-1,) + (1,) * rank).to(compute)
        term = x.to(compute) * w
        total = term if total is None else total + term
    return total.to(dtype)


def _rule_for(op: Op, ov: Overload, inplace: bool):
    parsed = ov.parsed()
    offset = 1 if inplace and op.inplace_target else 0  # accumulate_(out, tensors, ...): out leads
    positions = list(range(offset))
    coefficient = None
    for i, (name, arg) in enumerate(zip(op.params, parsed), start=offset):
        if arg.type in ("Tensor", "Tensor[]") and name not in op.coefficients:
            positions.append(i)
        elif arg.type == "Tensor":
            coefficient = i
    packet = getattr(torch.ops.safe_ops, op.name + ("_inplace" if inplace else ""))
    target = getattr(packet, ov.name or "default")
    functional = getattr(getattr(torch.ops.safe_ops, op.name), ov.name or "default")

    def rule(info: Any, in_dims: tuple, *args: Any, **kwargs: Any):
        args, dims = list(args), list(in_dims)
        if inplace and dims[0] is None:
            raise RuntimeError(
                f"vmap: safe_ops.{op.name}_inplace cannot write a per-sample result into an unbatched tensor "
                f"(as torch's in-place ops under vmap): make the target batched, or use safe_ops.{op.name}."
            )
        flat = list(_flat(args, dims, positions))
        rank = max(_logical_dim(t, d) for t, d in flat)
        batched_weights = coefficient is not None and dims[coefficient] is not None
        dtype = None
        # A batched per-sample 0-dim tensor is (B,) here and would promote as a dimensioned tensor: it is cast to
        # the per-sample result dtype (the op on one sample's meta stand-ins), as torch's own batching rules do.
        if batched_weights or (op.dtype == "promote" and any(d is not None and t.dim() == 1 for t, d in flat)):
            stand = [_stand_in(a, d) if isinstance(a, Tensor) else a for a, d in zip(args, dims)]
            for i in positions:
                if isinstance(args[i], (list, tuple)):
                    stand[i] = [_stand_in(x, e) for x, e in zip(args[i], dims[i])]
            dtype = (stand[0] if inplace else functional(*stand, **kwargs)).dtype

        def fix(t: Tensor, d: Optional[int]) -> Tensor:
            if dtype is not None and d is not None and t.dim() == 1 and t.dtype != dtype:
                t = t.to(dtype)
            return _align(t, d, rank)

        for i in positions:
            if isinstance(args[i], (list, tuple)):
                args[i] = [fix(t, d) for t, d in zip(args[i], dims[i])]
            elif isinstance(args[i], Tensor):
                args[i] = fix(args[i], dims[i])
        if batched_weights:
            weights = args[coefficient].movedim(dims[coefficient], 0)
            total = _weighted_sum(list(args[coefficient - 1]), weights, dtype, rank)
            if not inplace:
                return total, 0
            args[0].add_(total)
            return None, None
        result = target(*args, **kwargs)
        return (None, None) if inplace else (result, 0)

    return rule


# The backward ops run under vmap when a backward itself is batched (torch.autograd.grad(is_grads_batched=True),
# jacobian(vectorize=True)); under torch.func the Nodes take the differentiable composition instead.


def _scale(handle: Any):
    """"scale" (out[k] = scales[k]·grad): one call over the whole batch, or with per-sample scales (B, K), one
    product per scale with torch ops."""

    def rule(info: Any, in_dims: tuple, grad: Tensor, scales: Any):
        if not isinstance(scales, Tensor) or in_dims[1] is None:
            out = handle(grad.movedim(in_dims[0], 0), scales)
            return out, [0] * len(out)
        s = scales.movedim(in_dims[1], 0)  # (B, K): per-sample scales, one product each
        g = grad.unsqueeze(0) if in_dims[0] is None else grad.movedim(in_dims[0], 0)
        view = (-1,) + (1,) * (g.dim() - 1)
        out = [(g * s[:, i].reshape(view)).to(grad.dtype) for i in range(s.shape[1])]
        return out, [0] * len(out)

    return rule


def _dot(handle: Any):
    """"dot" (Σ grad·tensors[k]): per sample, with torch ops in float64 as the kernel sums."""

    def rule(info: Any, in_dims: tuple, grad: Tensor, tensors: List[Tensor]):
        flat = [(grad, in_dims[0])] + list(zip(tensors, in_dims[1]))
        rank = max(_logical_dim(t, d) for t, d in flat)
        g = _align(grad, in_dims[0], rank).double()  # the kernel sums in float64 too
        columns = []
        for x, d in zip(tensors, in_dims[1]):
            product = g * _align(x, d, rank).double()
            batched = product.dim() == rank + 1
            columns.append(product.flatten(1).sum(1) if batched else product.sum().expand(info.batch_size))
        return torch.stack(columns, dim=1), 0

    return rule


def _masked(op: Any):
    """"masked" (gradients pointwise over grad and the operands): one call over the whole batch."""

    def rule(info: Any, in_dims: tuple, *args: Any):
        flat = [(a, d) for a, d in zip(args, in_dims) if isinstance(a, Tensor)]
        rank = max(_logical_dim(t, d) for t, d in flat)
        aligned = [_align(a, d, rank) if isinstance(a, Tensor) else a for a, d in zip(args, in_dims)]
        out = op(*aligned)
        # An output that read only unbatched operands has no batch dimension.
        dims = tuple(None if o is None or o.dim() <= rank else 0 for o in out)
        return out, dims

    return rule


def register() -> None:
    """Registers a rule for every overload of every declared op, its in-place kernel and the backward ops."""
    if not hasattr(torch.library, "register_vmap"):  # torch < 2.4: vmap keeps its fallback
        return
    for op in OPS:
        for ov in op.overloads:
            for inplace in (False, True):
                name = qualified(op.name + ("_inplace" if inplace else ""), ov.name)
                torch.library.register_vmap(f"safe_ops::{name}", _rule_for(op, ov, inplace))
    rules = {"scale": _scale, "dot": _dot, "masked": _masked}  # by BackwardOp.kind
    for b in BACKWARD_OPS:
        handle = getattr(getattr(torch.ops.safe_ops, b.name), b.overload or "default")
        torch.library.register_vmap(f"safe_ops::{qualified(b.name, b.overload)}", rules[b.kind](handle))


register()
