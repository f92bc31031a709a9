"""Function transforms against torch: forward-mode AD (torch.func.jvp, dual tensors, in-place variants), vmap
(no per-sample fallback: its performance warning is an error here), their compositions with grad, jacfwd,
jacrev and hessian. Every op of the table, every small sample, float64."""
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, hessian, jvp, vmap

from op_table import OP_TABLE, Sample, op_checks, op_ids, reference_update, replace_tensors

B = 3  # vmap batch size
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _samples(info, device="cpu"):
    """Small float64 samples with materialised expanded inputs: a dual tensor's tangent and a batched
    tensor need memory of their own."""
    torch.manual_seed(0)
    for sample in info.samples(torch.float64, device):
        if sample.large:
            continue
        yield replace_tensors(sample, lambda t: t.contiguous() if 0 in t.stride() and t.numel() > 1 else t)


def _call(fn, sample, flat):
    it = iter(flat)
    rebuilt = replace_tensors(sample, lambda t: next(it))
    return fn(*rebuilt.args, **rebuilt.kwargs)


def _tangents(tensors):
    return tuple(torch.randn_like(t, memory_format=torch.contiguous_format) for t in tensors)


@pytest.fixture(autouse=True)
def _no_vmap_fallback():
    # The per-sample fallback warns ("There is a performance drop ...", a UserWarning): here it is an error, so
    # every call must find a batching rule. (torch's own FutureWarnings stay warnings.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


# ---- forward-mode AD ----


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_jvp_matches_torch(info, device):
    n = 0
    for sample in _samples(info, device):
        primals = tuple(sample.tensors())
        tangents = _tangents(primals)
        out, tangent = jvp(lambda *flat: _call(info.op, sample, flat), primals, tangents)
        ref_out, ref_tangent = jvp(lambda *flat: _call(info.ref, sample, flat), primals, tangents)
        torch.testing.assert_close(out, ref_out, msg=sample.desc)
        torch.testing.assert_close(tangent, ref_tangent, msg=sample.desc)
        assert tangent.shape == out.shape and tangent.dtype == out.dtype, sample.desc
        n += 1
    assert n > 5


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_dual_tensors_some_tangents_missing(info):
    # Operands without a tangent count as zero: each operand alone carries one, through safe_ops.<op>.
    n = 0
    for sample in _samples(info):
        tensors = sample.tensors()
        for k in range(len(tensors)):
            tangent = torch.randn_like(tensors[k], memory_format=torch.contiguous_format)
            with fwAD.dual_level():
                flat = [fwAD.make_dual(t, tangent) if i == k else t for i, t in enumerate(tensors)]
                got = fwAD.unpack_dual(_call(info.op, sample, flat))
                want = fwAD.unpack_dual(_call(info.ref, sample, flat))
            assert got.tangent is not None, sample.desc
            torch.testing.assert_close(got.primal, want.primal, msg=sample.desc)
            torch.testing.assert_close(got.tangent, want.tangent, msg=sample.desc)
            n += 1
    assert n > 5


def _inplace_cases(info):
    """(args of safe_ops.<name>_ with a fresh target, description) from the op's samples: the first operand is
    the target (or a new target leads, for an op whose in-place form takes its own), where the result has its
    shape."""
    for sample in _samples(info):
        if any(t.numel() == 0 for t in sample.tensors()):
            continue
        expected = info.op(*sample.args, **sample.kwargs)
        if info.separate_target:
            yield (torch.randn_like(expected),) + sample.args, sample.kwargs, sample.desc
        elif sample.args[0].shape == expected.shape and sample.args[0].dtype == expected.dtype:
            yield (sample.args[0].clone(),) + sample.args[1:], sample.kwargs, sample.desc


def _dual_args(args, tangents, which):
    """args with the tensors in `which` (flat indices) made dual with the given tangents."""
    flat = Sample(tuple(args)).tensors()
    duals = {i: fwAD.make_dual(flat[i], tangents[i]) for i in which}
    it = iter(range(len(flat)))
    return replace_tensors(Sample(tuple(args)), lambda t: duals.get(next(it), t)).args


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_inplace_variant_sets_the_inplace_tangent(info):
    n = 0
    for args, kwargs, desc in _inplace_cases(info):
        flat = Sample(tuple(args)).tensors()
        tangents = _tangents(flat)
        for which in (range(len(flat)), [0], range(1, len(flat))):  # all, only the target, only operands
            if not list(which):
                continue
            target = args[0]
            with fwAD.dual_level():
                ref_args = _dual_args(tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args),
                                      [t.clone() for t in tangents], which)
                want = fwAD.unpack_dual(reference_update(info, ref_args, kwargs))
                # The wrapper (in place or a new tensor, as it decides) and the kernel (in place).
                for call in (info.inplace, lambda *a, **k: _inplace_kernel(info, a, k)):
                    dual_args = _dual_args((target.clone(),) + args[1:], [t.clone() for t in tangents], which)
                    got = fwAD.unpack_dual(call(*dual_args, **kwargs))
                    torch.testing.assert_close(got.primal, want.primal, msg=desc)
                    torch.testing.assert_close(got.tangent, want.tangent, msg=desc)
                written = fwAD.unpack_dual(dual_args[0])
                torch.testing.assert_close(written.primal, want.primal, msg=desc)
                torch.testing.assert_close(written.tangent, want.tangent, msg=desc)
            n += 1
    assert n > 3


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_inplace_variant_under_jvp_and_grad(info):
    # torch.func wraps tensors (no storage to decide on): the wrapper returns the functional result.
    n = 0
    for args, kwargs, desc in _inplace_cases(info):
        flat = tuple(Sample(tuple(args)).tensors())

        def update(fn):
            return lambda *f: fn(*_rebuild(args, [f[0] * 1] + list(f[1:])), **kwargs)

        reference = update(lambda *a, **k: reference_update(info, a, k))
        tangents = _tangents(flat)
        got, want = jvp(update(info.inplace), flat, tangents), jvp(reference, flat, tangents)
        torch.testing.assert_close(got, want, msg=desc)
        argnums = tuple(range(len(flat)))
        got = grad(lambda *f: update(info.inplace)(*f).pow(2).sum(), argnums=argnums)(*flat)
        want = grad(lambda *f: reference(*f).pow(2).sum(), argnums=argnums)(*flat)
        torch.testing.assert_close(got, want, msg=desc)
        n += 1
    assert n > 3


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_hessian_matches_torch(info):
    # forward-over-reverse: the backward Nodes run on dual tensors and must propagate their tangents.
    n = 0
    for sample in _samples(info):
        primals = tuple(sample.tensors())
        if any(t.numel() == 0 for t in primals) or sum(t.numel() for t in primals) > 40:
            continue

        def loss(fn):
            return lambda *flat: (_call(fn, sample, flat) ** 2).sum()

        argnums = tuple(range(len(primals)))
        got = hessian(loss(info.op), argnums=argnums)(*primals)
        want = hessian(loss(info.ref), argnums=argnums)(*primals)
        torch.testing.assert_close(got, want, msg=sample.desc)
        n += 1
    assert n > 2


# ---- vmap ----


def _batched(t, dim, scale_step=0.25):
    # B copies scaled by 1, 1.25, ...: same signs, so divisors stay away from zero.
    return torch.stack([t * (1 + scale_step * b) for b in range(B)], dim=dim)


def _in_dim_patterns(n, ranks):
    yield [0] * n  # all batched at the front
    yield [None] + [r for r in ranks[1:]]  # first unbatched, the others batched at their last position
    yield [ranks[0]] + [None] * (n - 1)  # only the first batched (at its end)


def _vmap_cases(info, device="cpu"):
    for sample in _samples(info, device):
        tensors = sample.tensors()
        ranks = [t.dim() for t in tensors]
        for dims in _in_dim_patterns(len(tensors), ranks):
            if all(d is None for d in dims):
                continue
            flat = [t if d is None else _batched(t, d) for t, d in zip(tensors, dims)]
            yield sample, flat, dims


def _loop(fn, sample, flat, dims):
    return torch.stack([_call(fn, sample, [t if d is None else t.select(d, b) for t, d in zip(flat, dims)])
                        for b in range(B)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_vmap_matches_a_loop(info, device):
    n = 0
    for sample, flat, dims in _vmap_cases(info, device):
        got = vmap(lambda *f: _call(info.op, sample, f), in_dims=tuple(dims))(*flat)
        want = _loop(info.ref, sample, flat, dims)
        assert got.dtype == want.dtype, sample.desc
        torch.testing.assert_close(got, want, msg=f"{sample.desc} in_dims={dims}")
        n += 1
    assert n > 10


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_vmap_inplace_variant(info):
    n = 0
    for args, kwargs, desc in _inplace_cases(info):
        flat = Sample(tuple(args)).tensors()
        dims = [0] + [None if i % 2 else 0 for i in range(1, len(flat))]
        batched = [_batched(t, d) if d is not None else t for t, d in zip(flat, dims)]

        def wrapper(*f):
            rebuilt = _rebuild(args, f)
            return info.inplace(*rebuilt, **kwargs)

        def kernel(*f):  # the in-place kernel itself (the wrapper returns a new tensor under transforms)
            return _inplace_kernel(info, _rebuild(args, f), kwargs)

        want = torch.stack([reference_update(info, _rebuild(args, [t if d is None else t.select(d, b)
                                                                   for t, d in zip(batched, dims)]), kwargs)
                            for b in range(B)])
        for fn in (wrapper, kernel):
            target = batched[0].clone()
            got = vmap(fn, in_dims=tuple(dims))(target, *batched[1:])
            torch.testing.assert_close(got, want, msg=desc)
            if fn is kernel:
                torch.testing.assert_close(target, want, msg=f"{desc}: written in place")
        n += 1
    assert n > 3


def _inplace_kernel(info, args, kwargs):
    """torch.ops.safe_ops.<name>_inplace on safe_ops.<name>_'s arguments; returns the written target."""
    sample = Sample(tuple(args[1:] if info.separate_target else args), kwargs)
    overload = info.overload_for(sample)._overloadname
    getattr(getattr(torch.ops.safe_ops, f"{info.name}_inplace"), overload)(*args, **kwargs)
    return args[0]


def _rebuild(args, flat):
    it = iter(flat)
    return replace_tensors(Sample(tuple(args)), lambda t: next(it)).args


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_grad_of_vmap_and_vmap_of_grad(info):
    n = 0
    for sample, flat, dims in _vmap_cases(info):
        if any(t.numel() == 0 for t in flat):
            continue
        argnums = tuple(range(len(flat)))

        def loss(fn):
            return lambda *f: (vmap(lambda *g: _call(fn, sample, g), in_dims=tuple(dims))(*f) ** 2).sum()

        got = grad(loss(info.op), argnums=argnums)(*flat)
        want = grad(loss(info.ref), argnums=argnums)(*flat)
        torch.testing.assert_close(got, want, msg=sample.desc)
        # Per-sample gradients: vmap over grad.
        def per_sample(fn):
            return vmap(grad(lambda *g: (_call(fn, sample, g) ** 2).sum(), argnums=argnums), in_dims=tuple(dims))

        torch.testing.assert_close(per_sample(info.op)(*flat), per_sample(info.ref)(*flat), msg=sample.desc)
        n += 1
    assert n > 5


def _backward_op_cases():
    """Every row's backward ops under vmap: (op, args, in_dims, out_dims) (out_dims 0 unless the row says)."""
    for info in OP_TABLE:
        for case_id, op, args, dims, *out_dims in info.backward_vmap_cases(B):
            yield pytest.param(op, args, dims, out_dims[0] if out_dims else 0, id=f"{info.name}-{case_id}")


@pytest.mark.parametrize("op, args, dims, out_dims", list(_backward_op_cases()))
def test_vmap_backward_ops_match_a_loop(op, args, dims, out_dims):
    # They run batched when a backward is (torch.autograd.grad(is_grads_batched=True) on torch.func tensors).
    got = vmap(op, in_dims=dims, out_dims=out_dims)(*args)

    def sample(b):
        def pick(a, d):
            if isinstance(a, list) and isinstance(d, list):
                return [pick(t, e) for t, e in zip(a, d)]
            return a if d is None else a.select(d, b)

        return op(*[pick(a, d) for a, d in zip(args, dims)])

    loop = [sample(b) for b in range(B)]
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    loop = [[r] if isinstance(r, torch.Tensor) else list(r) for r in loop]
    for i, out in enumerate(got):
        if out is None:
            assert all(r[i] is None for r in loop)
            continue
        torch.testing.assert_close(out, torch.stack([r[i] for r in loop]).to(out.dtype))


@pytest.mark.parametrize("check", op_checks("transforms"))
def test_op_specific(check):
    check()


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_is_grads_batched_backward(info):
    # torch.autograd.grad(is_grads_batched=True) batches the backward with torch's legacy vmap.
    n = 0
    for sample in _samples(info):
        sample = replace_tensors(sample, lambda t: t.detach().requires_grad_())
        inputs = sample.tensors()
        if any(t.numel() == 0 for t in inputs):
            continue
        grads = torch.randn((B,) + tuple(info.op(*sample.args, **sample.kwargs).shape), dtype=torch.float64)
        got = torch.autograd.grad(info.op(*sample.args, **sample.kwargs), inputs, grads, is_grads_batched=True)
        want = torch.autograd.grad(info.ref(*sample.args, **sample.kwargs), inputs, grads, is_grads_batched=True)
        torch.testing.assert_close(got, want, msg=sample.desc)
        n += 1
    assert n > 5
