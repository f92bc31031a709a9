"""DTensor sharding rules for the safe_ops operators, derived from ``_declarations.py``.

Imported lazily (``safe_ops._distributed.register()``, called by ``safe_ops.enable_dtensor()`` and on first use of
a DTensor), because importing ``torch.distributed.tensor`` costs time that ``import safe_ops`` should not pay.

Every op whose tensor operands are ``Tensor`` or ``Tensor[]`` arguments (add, sub, addcmul, addcdiv, lerp and their
``_inplace`` kernels) gets torch's own pointwise single-dim strategy: Shard(d)/Replicate propagate with
broadcasting (a broadcast dimension takes Replicate), anything else is redistributed to Replicate. Partial is kept
without communication where the op is linear in those operands (add/sub: both operands Partial with the same
reduce op; lerp with a number weight: input and end Partial). The rules are chosen from the operand roles of the
declarations, never per op name.
"""
from __future__ import annotations

from typing import List

import torch

from ._declarations import BACKWARD_OPS, OPS, inplace_roles, operand_roles

_registered = False


def _partial_rules(op_name: str, roles: List[str], linear: bool, n_out: int):
    from torch.distributed.tensor.placement_types import Partial

    n_tensors = sum(r in "ot" for r in roles)
    if not linear:
        return []
    rules = []
    for reduce in ("sum", "avg"):
        rules.append([Partial(reduce)] * (n_out + n_tensors))
    return rules


def _linear(op, ov) -> bool:
    """Linear in every tensor operand at once (so that Partial(sum) on all operands stays Partial(sum)): an op whose
    result is a number-weighted sum of its tensor operands. Derived from the declaration: no tensor is a multiplier
    of another (addcmul/addcdiv multiply tensor1 by tensor2, a Tensor lerp weight multiplies)."""
    roles = operand_roles(op, ov)
    n_operands = roles.count("o")
    if "c" in roles or "l" in roles:
        return False
    # addcmul/addcdiv declare three operands of which two multiply; add/sub/lerp(Scalar) are sums of two operands.
    return n_operands == 2 and op.dtype in ("promote", "first")


def register() -> None:
    """Register the sharding strategies (idempotent)."""
    global _registered
    if _registered:
        return
    try:
        from torch.distributed.tensor._ops import _pointwise_ops as pw
        from torch.distributed.tensor.placement_types import Partial, Replicate  # noqa: F401

        register_pointwise = pw._register_single_dim_pointwise
    except (ImportError, AttributeError) as exc:  # torch moved its private pointwise registration
        raise RuntimeError(
            f"safe_ops: this torch ({torch.__version__}) lacks the DTensor pointwise strategy registration that "
            f"safe_ops uses (torch.distributed.tensor._ops._pointwise_ops._register_single_dim_pointwise): {exc}"
        ) from exc
    ns = torch.ops.safe_ops
    for op in OPS:
        for ov in op.overloads:
            roles = operand_roles(op, ov)
            if "c" in roles:
                continue  # a weights tensor (K coefficients): not supported yet
            if "l" in roles:
                _register_list_pointwise(getattr(getattr(ns, op.name), ov.name or "default"), 1)
                _register_list_pointwise(getattr(getattr(ns, op.name + "_inplace"), ov.name or "default"), 0)
                continue
            linear = _linear(op, ov)
            functional = getattr(getattr(ns, op.name), ov.name or "default")
            register_pointwise(functional, _partial_rules(op.name, roles, linear, 1))
            iroles = list(inplace_roles(op, ov))
            inplace = getattr(getattr(ns, op.name + "_inplace"), ov.name or "default")
            register_pointwise(inplace, _partial_rules(op.name, iroles[1:], linear, 1))
    _register_scale_many(ns)
    # Backward ops of the pointwise ops: pointwise in every tensor argument (grad and the saved operands).
    for b in BACKWARD_OPS:
        if "Tensor[]" in b.args or b.returns == "Tensor[]" or b.name == "dot_many":
            continue
        register_pointwise(getattr(getattr(ns, b.name), b.overload or "default"), [])
    _registered = True


def _register_list_pointwise(op, n_out: int) -> None:
    """An op pointwise over every tensor of its arguments, TensorList members included (accumulate with number
    weights: Σ w[i] * tensors[i], linear in every member, so Partial on all of them stays Partial)."""
    from torch.distributed.tensor._dtensor_spec import TensorMeta
    from torch.distributed.tensor._op_schema import RuntimeSchemaInfo
    from torch.distributed.tensor._ops.single_dim_strategy import _ShardingPlaceholder, register_single_dim_strategy
    from torch.distributed.tensor._ops.utils import infer_broadcast_dims_map
    from torch.distributed.tensor.placement_types import Partial, Replicate

    def strategy(op, args, kwargs):
        metas = []
        for a in args:
            if isinstance(a, TensorMeta):
                metas.append(a)
            elif isinstance(a, (list, tuple)):
                metas += [m for m in a if isinstance(m, TensorMeta)]
        shape = torch.broadcast_shapes(*[m.shape for m in metas])
        rules = []
        for d in range(len(shape)):
            rule = [_ShardingPlaceholder(d)] * n_out
            for m in metas:
                md = infer_broadcast_dims_map(shape, m.shape)[d]
                rule.append(_ShardingPlaceholder(md) if md >= 0 else Replicate())
            rules.append(rule)
        rules += [[Partial(r)] * (n_out + len(metas)) for r in ("sum", "avg")]
        return rules

    register_single_dim_strategy(op, schema_info=RuntimeSchemaInfo(needs_pytree=True),
                                 allow_uneven_sharding=True)(strategy)


def _register_scale_many(ns) -> None:
    """scale_many(grad, scales) -> [scales[k] * grad]: as many outputs as scales, each laid out like grad (linear in
    grad: Partial stays Partial); a tensor of scales is Replicate."""
    from torch.distributed.tensor._dtensor_spec import TensorMeta
    from torch.distributed.tensor._op_schema import RuntimeSchemaInfo
    from torch.distributed.tensor._ops.single_dim_strategy import _ShardingPlaceholder, register_single_dim_strategy
    from torch.distributed.tensor.placement_types import Partial, Replicate

    def strategy(op, args, kwargs):
        grad, scales = args[0], args[1]
        tensor_scales = isinstance(scales, TensorMeta)
        n = scales.shape[0] if tensor_scales else len(scales)
        tail = [Replicate()] if tensor_scales else []
        rules = [[_ShardingPlaceholder(d)] * (n + 1) + tail for d in range(len(grad.shape))]
        rules += [[Partial(r)] * (n + 1) + tail for r in ("sum", "avg")]
        return rules

    for overload, info in (("default", RuntimeSchemaInfo(1)), ("weights_tensor", None)):
        register_single_dim_strategy(getattr(ns.scale_many, overload), schema_info=info,
                                     allow_uneven_sharding=True)(strategy)


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
