"""DTensor sharding rules for the safe_ops operators, derived from ``_declarations.py``.

Registered lazily (``register()``, called by ``install()`` as soon as ``torch.distributed.tensor`` is imported),
because importing ``torch.distributed.tensor`` costs time that ``import safe_ops`` should not pay.

Every op is pointwise in its tensor operands (``Tensor``, ``Tensor?`` and ``Tensor[]`` arguments): Shard(d)/Replicate
propagate with broadcasting (a broadcast dimension takes Replicate), anything else is redistributed to Replicate. A
coefficient tensor (accumulate's weights, K numbers) is Replicate. Partial is kept without communication where the
declaration says the result is linear in all those operands at once (``Overload.linear_in``: add/sub, lerp with a
number weight, accumulate; not addcmul, whose tensor1 and tensor2 multiply). The rules are chosen from the operand
roles, linearity and backward-op kinds of the declarations, never per op name. A "dot" backward op (K dot products)
turns Shard into Partial(sum).

The in-place kernels (``<op>_inplace``, ``foreach_<op>_inplace``) never change their target's placement, as torch's
own in-place ops: a strategy that would redistribute the target is not offered, and where none is left DTensor raises
torch's "in-place operations that require placement changes are not supported" (``addcmul_`` on a Partial target).
Their names do not end in ``_``, so DTensor would not know them for in-place ops (it would redistribute the target
and write into the copy): they are registered as op strategies that say so (``inplace_op=True``), with Shard(d) and
the target's own ``_StridedShard`` kind (FSDP2 over tensor parallel).

Two registration paths for the rest:
- torch's private single-dim strategies (``_register_single_dim_pointwise``, ``register_single_dim_strategy``: they
  fill ``_StridedShard`` and multi-dim meshes for us), where this torch has both;
- else (a torch without them: 2.11) the public ``torch.distributed.tensor.experimental.register_sharding``
  for the functional ops, and the op-strategy registration (``register_op_strategy`` with
  ``expand_to_full_mesh_op_strategy``, what register_sharding wraps) for the one it cannot describe
  (a "scale" backward op: a ``Tensor[]`` result of len(scales) tensors). ``BACKEND`` says which path registered.
Per torch release: 2.13's single-dim expansion cannot take a ``Tensor[]`` result, so "scale" ops take the op
strategy there too; 2.11's expansion has no ``allow_uneven_sharding``, so the in-place kernels expand their
target-keeping rules themselves (``_keep_target_strategy``).
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

from ._declarations import BACKWARD_OPS, FOREACH_OPS, OPS, inplace_roles, operand_roles, parse_args
from ._sharding_rules import (
    _dot,
    _foreach,
    _leaves,
    _partial_rules,
    _pointwise,
    _replicate_rule,
    _scale,
    _scale_outputs,
)
from ._support import release

_registered = False
BACKEND: Optional[str] = None  # "single_dim" or "register_sharding", once registered


def _linear(op, ov) -> bool:
    """Linear in every pointwise tensor operand at once (Partial on all of them stays Partial): one of the overload's
    declared sets (Overload.linear_in) holds them all. Coefficient tensors (accumulate's weights) are Replicate."""
    pointwise = {name for name, role in zip(op.params, operand_roles(op, ov)) if role in "ol"}
    return any(pointwise <= set(names) for names in ov.linear_in)


def _linear_positions(b) -> list:
    """A backward op's declared linear sets (BackwardOp.linear_in) as argument positions."""
    names = [a.name for a in parse_args(b.args)]
    return [tuple(names.index(n) for n in names_in) for names_in in b.linear_in]


# ---- Registration. --------------------------------------------------------------------------------------------------


def _op_strategy(op, rules: Callable, *, inplace: bool, n_out=0, needs_pytree=False, static_argnum=100,
                 out_meta: Optional[Callable] = None) -> None:
    """Register `rules` (with concrete Shard) as an op strategy, every mesh dim expanded by torch's
    expand_to_full_mesh_op_strategy; `inplace`: no strategy may change the first tensor's placement."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._op_schema import RuntimeSchemaInfo
    from torch.distributed.tensor._ops.utils import expand_to_full_mesh_op_strategy
    from torch.distributed.tensor.placement_types import Shard

    params = inspect.signature(expand_to_full_mesh_op_strategy).parameters
    takes_meta = "output_tensor_meta" in params
    # An FSDP2 shard may be uneven or empty ((1, d) over 2 ranks): kept where the input already has that layout.
    options = {"allow_uneven_sharding": True} if "allow_uneven_sharding" in params else {}

    def strategy(op_schema):
        args = op_schema.args_schema
        count = n_out(args) if callable(n_out) else n_out
        single = []
        for shard in _shard_kinds(args) if inplace else (Shard,):
            single += [rule for rule in rules(shard, args) if rule not in single]
        n = count + len(_leaves(args)) + len(_leaves(tuple(op_schema.kwargs_schema.values())))
        single.append(_replicate_rule(n))
        mesh = op_schema.get_mesh_from_args(validate=False)
        if inplace and not options:
            return _keep_target_strategy(mesh, op_schema, single, op)
        kwargs = dict(options)
        if takes_meta and out_meta is not None:
            kwargs["output_tensor_meta"] = out_meta(args)
        return expand_to_full_mesh_op_strategy(mesh, op_schema, single, input_index=count, inplace_op=inplace,
                                               **kwargs)

    DTensor._op_dispatcher.sharding_propagator.register_op_strategy(
        op, strategy, RuntimeSchemaInfo(static_argnum, needs_pytree=needs_pytree))


def _keep_target_strategy(mesh, op_schema, single: list, op):
    """An in-place kernel's strategies (no outputs) on a torch whose expansion has no allow_uneven_sharding (2.11):
    it would drop the target's own layout when a shard is uneven or empty, where torch's in-place ops keep it. The
    target cannot be redistributed anyway, so only rules that keep it on every mesh dim are expanded, unfiltered."""
    import itertools

    from torch.distributed.tensor._dtensor_spec import DTensorSpec
    from torch.distributed.tensor._op_schema import OpSpec, OpStrategy
    from torch.distributed.tensor._ops.utils import generate_redistribute_costs

    inputs = list(op_schema.args_strategy) + list(op_schema.kwargs_strategy)
    target = inputs[0].strategies[0].output_spec.placements
    per_dim = [[rule for rule in single if rule[0] == p] for p in target]
    specs = []
    for comb in itertools.product(*per_dim):
        input_specs = [DTensorSpec(mesh, tuple(rule[i] for rule in comb), tensor_meta=inp.tensor_meta)
                       for i, inp in enumerate(inputs)]
        specs.append(OpSpec(output_specs=None, input_specs=input_specs,
                            redistribute_cost=[generate_redistribute_costs(inp, spec)
                                               for inp, spec in zip(inputs, input_specs)]))
    if not specs:  # torch's own words for its in-place ops
        raise RuntimeError(
            f"{op}: in-place operations that require placement changes are not supported. The input has placement "
            f"{tuple(target)}, but no valid strategy preserves this placement. Please use the out-of-place version "
            "of this operation instead.")
    return OpStrategy(specs)


def _shard_kinds(args) -> list:
    """Shard, and the _StridedShard(split_factor) of the in-place target (FSDP2 over tensor parallel lays parameters
    out so): the target cannot be redistributed to plain Shard, so the rules offer its own kind (an operand of the
    target's shape laid out alike is elementwise aligned with it)."""
    import functools

    from torch.distributed.tensor import placement_types

    kinds = [placement_types.Shard]
    strided = getattr(placement_types, "_StridedShard", None)
    leaves = _leaves(args)
    if strided is not None and leaves:
        for p in leaves[0].strategies[0].output_spec.placements:
            if isinstance(p, strided) and p.split_factor not in [k.keywords["split_factor"] for k in kinds[1:]]:
                kinds.append(functools.partial(strided, split_factor=p.split_factor))
    return kinds


def _scale_meta(args):
    from torch.distributed.tensor._dtensor_spec import TensorMeta

    grad = args[0].tensor_meta
    return [TensorMeta(grad.shape, grad.stride, grad.dtype)] * _scale_outputs(args)


def _scale_strategy(op, rules: Callable, static: bool) -> None:
    """A "scale" backward op as an op strategy: its Tensor[] result has as many tensors as scales."""
    _op_strategy(op, rules, inplace=False, n_out=_scale_outputs, static_argnum=1 if static else 100,
                 out_meta=_scale_meta)


def _single_dim_takes_list_results() -> bool:
    """torch 2.13's single-dim expansion counts a Tensor[] result as one output and asserts on a "scale" op's
    strategies ("Strategy length 3 != expected 2"); 2.14 takes the number of outputs from the strategy."""
    return release(torch.__version__) >= (2, 14)


class _SingleDim:
    """torch's private single-dim strategies, where this torch has them (2.13 and later; 2.11 has not)."""

    name = "single_dim"

    def __init__(self):
        from torch.distributed.tensor._ops import _pointwise_ops as pw
        from torch.distributed.tensor._ops.single_dim_strategy import (
            _ShardingPlaceholder,
            register_single_dim_strategy,
        )

        self.pointwise = pw._register_single_dim_pointwise
        self.placeholder = _ShardingPlaceholder
        self.single_dim = register_single_dim_strategy

    def functional(self, op, roles: str, n_out: int, linear: bool) -> None:
        if set(roles) <= set("ons"):  # Tensor and Tensor? operands only: torch's own pointwise rule
            self.pointwise(op, _partial_rules(roles, n_out, linear))
        else:  # a list of operands, or a coefficient tensor
            self.rules(op, _pointwise(roles, n_out, linear), needs_pytree=True)

    def rules(self, op, rules: Callable, needs_pytree=False, static_argnum=100) -> None:
        from torch.distributed.tensor._op_schema import RuntimeSchemaInfo

        self.single_dim(op, schema_info=RuntimeSchemaInfo(static_argnum, needs_pytree=needs_pytree),
                        allow_uneven_sharding=True)(lambda op, args, kwargs: rules(self.placeholder, args))

    def scale(self, op, rules: Callable, static: bool) -> None:
        # (grad, float[] scales): the number of results is len(scales), part of the strategy's cache key
        if not _single_dim_takes_list_results():
            _scale_strategy(op, rules, static)
            return
        self.rules(op, rules, static_argnum=1 if static else 100)

    def dot(self, op, rules: Callable) -> None:
        self.rules(op, rules, needs_pytree=True)


class _Public:
    """The public register_sharding, and op strategies where it cannot say what an op needs."""

    name = "register_sharding"

    def __init__(self):
        from torch.distributed.tensor.experimental import register_sharding

        self.register_sharding = register_sharding

    def functional(self, op, roles: str, n_out: int, linear: bool) -> None:
        self.rules(op, _pointwise(roles, n_out, linear), n_out)

    def rules(self, op, rules: Callable, n_out: int) -> None:
        from torch.distributed.tensor.placement_types import Shard

        def sharding(*args, **kwargs):
            single = rules(Shard, args)
            single.append(_replicate_rule(n_out + len(_leaves(args))))
            return [(r[:n_out], r[n_out:]) for r in single]

        self.register_sharding(op)(sharding)

    def scale(self, op, rules: Callable, static: bool) -> None:  # a Tensor[] result: beyond register_sharding
        _scale_strategy(op, rules, static)

    def dot(self, op, rules: Callable) -> None:
        self.rules(op, rules, 1)


def _backend():
    try:
        return _SingleDim()
    except (ImportError, AttributeError):  # torch moved or lacks its private single-dim registration
        pass
    try:
        return _Public()
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"safe_ops: this torch ({torch.__version__}) has neither DTensor's single-dim strategy registration nor "
            f"torch.distributed.tensor.experimental.register_sharding: {exc}") from exc


def register() -> None:
    """Register the sharding strategies (idempotent)."""
    global _registered, BACKEND
    if _registered:
        return
    backend = _backend()
    ns = torch.ops.safe_ops
    for op in OPS:
        for ov in op.overloads:
            roles = "".join(operand_roles(op, ov))
            linear = _linear(op, ov)
            backend.functional(getattr(getattr(ns, op.name), ov.name or "default"), roles, 1, linear)
            iroles = inplace_roles(op, ov)
            _op_strategy(getattr(getattr(ns, op.name + "_inplace"), ov.name or "default"),
                         _pointwise(iroles, 0, linear), inplace=True, needs_pytree="l" in iroles)
    for b in BACKWARD_OPS:
        overload = getattr(getattr(ns, b.name), b.overload or "default")
        args = parse_args(b.args)
        if b.kind == "scale":  # float[] scales (not a tensor) are part of the strategy's cache key
            backend.scale(overload, _scale(_linear_positions(b)), static=not args[1].type.startswith("Tensor"))
        elif b.kind == "dot":
            backend.dot(overload, _dot(_linear_positions(b)))
        else:  # "masked": pointwise in grad and the saved operands
            roles = "".join("o" if a.type.startswith("Tensor") else "s" for a in args)
            tensors = {a.name for a in args if a.type.startswith("Tensor")}
            linear = any(tensors <= set(names) for names in b.linear_in)
            backend.functional(overload, roles, b.returns.count("Tensor"), linear)
    for fop in FOREACH_OPS:
        base = next(op for op in OPS if op.name == fop.base)
        ov = next(o for o in base.overloads if operand_roles(base, o).count("o") == 1 + len(fop.lists))
        _op_strategy(getattr(ns, f"{fop.name}_inplace").default, _foreach(f"{fop.name}_", _linear(base, ov)),
                     inplace=True, needs_pytree=True)
    BACKEND = backend.name
    _registered = True


class _AfterImport:
    """A meta-path finder that calls register() once torch.distributed.tensor has been imported, so that
    ``import safe_ops`` does not pay for importing it (about half a second) and DTensor users need do nothing."""

    name = "torch.distributed.tensor"

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)  # find the real spec, without us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_or_warn()

        loader.exec_module = exec_then_register
        return spec


def _register_or_warn() -> None:
    # A torch without the registration must not break importing torch.distributed.tensor: DTensors then raise
    # torch's "no sharding strategy" error, and this warning says why.
    try:
        register()
    except RuntimeError as exc:
        import warnings

        warnings.warn(str(exc), RuntimeWarning, stacklevel=2)


def install() -> None:
    """Register now if torch.distributed.tensor is imported, else as soon as it is."""
    import sys

    if not torch.distributed.is_available():
        return
    if "torch.distributed.tensor" in sys.modules:
        _register_or_warn()
    else:
        sys.meta_path.insert(0, _AfterImport())
