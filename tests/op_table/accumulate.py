"""safe_ops.accumulate: Σ weights[i] * tensors[i] in one pass; accumulate_(out, tensors, weights) adds it to out."""
from typing import List

import pytest
import torch
from torch.func import vmap

import safe_ops

from .core import FLOAT_DTYPES, Check, DTensorCase, ErrorInput, OpInfo, Sample, make_tensor
from .samples import A34, B5, INTS

B = 3  # vmap batch size

ACCUMULATE_CASES = [
    # (shapes, layouts, large)
    ([(7,)], ["contiguous"], False),
    ([(3, 4)] * 3, ["contiguous"] * 3, False),
    ([(3, 4), (4,), ()], ["contiguous"] * 3, False),
    ([(3, 4)] * 3, ["transposed", "contiguous", "expanded"], False),
    ([(33,)] * 10, ["offset"] + ["contiguous"] * 9, False),
    ([(0, 3)] * 2, ["contiguous"] * 2, False),
    ([(65537,)] * 3, ["contiguous"] * 3, True),
]


def _samples(dtype, device, requires_grad=False):
    for shapes, layouts, large in ACCUMULATE_CASES:
        xs = [make_tensor(s, dtype, device, lay).requires_grad_(requires_grad) for s, lay in zip(shapes, layouts)]
        k = len(xs)
        desc = f"K={k} {shapes[0]}"
        yield Sample((xs,), {}, desc + " weights=None", large)
        yield Sample((xs, [0.5 * (i + 1) - 1 for i in range(k)]), {}, desc + " weights=list", large)
        w = torch.linspace(-1, 2, k, dtype=dtype, device=device).requires_grad_(requires_grad)
        yield Sample((xs, w), {}, desc + " weights=tensor", large)



def reference(tensors, weights=None):
    # accumulate's documented order: w_0*x_0, then each further term added as torch.add(total, x_i, alpha=w_i),
    # which is fused where torch's kernels fuse (FMA CPUs) and not where they don't.
    total = None
    for i, t in enumerate(tensors):
        if total is None:
            total = t if weights is None else t * weights[i]
        else:
            w = None if weights is None else weights[i]
            if w is None:
                total = total + t
            elif isinstance(w, torch.Tensor):  # differentiable weight: addcmul fuses t*w into total alike
                total = torch.addcmul(total, t, w)
            else:
                total = torch.add(total, t, alpha=w)
    return total



def reference_inplace(out, tensors, weights=None):
    """accumulate_(out, tensors, weights) out of place: the target joins the list with weight 1."""
    return reference([out] + list(tensors), None if weights is None else [1.0] + list(weights))


def _names(sample):
    names = [f"x{i}" for i in range(len(sample.args[0]))]
    if len(sample.args) > 1 and isinstance(sample.args[1], torch.Tensor):
        names.append("weights")
    return names


def _saved(sample, requiring):
    if "weights" not in _names(sample):
        return frozenset()
    saved = set()
    if "weights" in requiring:
        saved |= {n for n in _names(sample) if n != "weights"}
    if requiring - {"weights"}:
        saved.add("weights")
    return frozenset(saved)



def _errors() -> List[ErrorInput]:
    return [
        ErrorInput("accumulate shapes", "op", ([A34, B5],), RuntimeError, lambda: A34 + B5),
        ErrorInput("accumulate_ shapes", "inplace", (A34, [A34.clone(), B5]), RuntimeError, lambda: A34 + B5),
        ErrorInput("accumulate empty list", "op", ([],), RuntimeError, lambda: torch.stack([])),
        ErrorInput("accumulate_ empty list", "inplace", (A34, []), RuntimeError, lambda: torch.stack([])),
        ErrorInput("accumulate len(weights) != K", "op", ([B5, B5], [1.0]), RuntimeError,
                   lambda: torch._foreach_mul([B5, B5], [1.0])),
        ErrorInput("accumulate_ len(weights) != K", "inplace", (B5, [B5.clone()], [1.0, 2.0]), RuntimeError,
                   lambda: torch._foreach_mul([B5], [1.0, 2.0])),
        ErrorInput("accumulate weights tensor wrong length", "op", ([B5, B5], torch.ones(3)), RuntimeError),
        ErrorInput("integer accumulate_", "inplace", (INTS, [INTS]), TypeError),
    ]



# In-place calls on operands beyond the caches take the K-input loop's prefetching path (csrc/cpu/kernels.cpp,
# from 4 MB streamed): the same sums in the same order, so the same bits as accumulate_'s documented order (the
# target first, then each term).
def _prefetch(dtype, g, n):
    target = torch.randn(n // 4, generator=g).to(dtype)
    xs = [torch.randn(n // 4, generator=g).to(dtype) for _ in range(9)]  # 10 inputs: two groups per block
    weights = [0.5 * i - 1.25 for i in range(9)]
    wide = torch.promote_types(dtype, torch.float32)  # half types sum in float32 and round once (README)
    expected = reference([t.to(wide) for t in [target] + xs], [1.0] + weights).to(dtype)
    assert safe_ops.accumulate_(target, xs, weights) is target
    return [(target, expected)]


def _torch_inplace_update(out, tensors, weights):
    """accumulate_ with torch's in-place ops: the target plus each tensor."""
    for x, w in zip(tensors, weights):
        out.add_(x, alpha=w)
    return out


def _vmap_batched_weights():
    xs = [torch.randn(B, 3, 4) for _ in range(3)]
    w = torch.randn(B, 3)
    got = vmap(lambda a, b, c, w: safe_ops.accumulate([a, b, c], w))(*xs, w)
    want = torch.stack([sum(w[i, k] * xs[k][i] for k in range(3)) for i in range(B)])
    torch.testing.assert_close(got, want)
    out = torch.zeros(B, 3, 4)
    res = vmap(lambda o, a, w: safe_ops.accumulate_(o, [a, a], w[:2]))(out, xs[0], w)
    torch.testing.assert_close(res, (w[:, 0] + w[:, 1])[:, None, None] * xs[0])


def _backward_vmap_cases(B):
    g, x, v = torch.randn(B, 3, 4), torch.randn(B, 3, 4), torch.randn(4)
    ops = torch.ops.safe_ops
    return [("scale_many", ops.scale_many.default, (g, [0.5, 2.0]), (0, None)),
            ("scale_many_weights_tensor", ops.scale_many.weights_tensor, (g, torch.randn(2)), (0, None)),
            ("scale_many_batched_weights", ops.scale_many.weights_tensor, (g[0], torch.randn(B, 2)), (None, 0)),
            ("scale_many_both_batched", ops.scale_many.weights_tensor, (g, torch.randn(2, B)), (0, 1)),
            ("dot_many", ops.dot_many.default, (g, [x, v]), (0, [0, None])),
            ("dot_many_unbatched_grad", ops.dot_many.default, (g[0], [x, v]), (None, [0, None]))]


def _out():
    xs = [torch.randn(2, 3) for _ in range(3)]
    out = torch.empty(0, dtype=torch.float64)
    assert safe_ops.accumulate(xs, [1.0, -2.0, 0.5], out=out) is out
    assert out.dtype == torch.float64 and torch.equal(out, safe_ops.accumulate(xs, [1.0, -2.0, 0.5]).double())
    with pytest.raises(RuntimeError, match="can't be cast"):
        safe_ops.accumulate(xs, out=torch.empty(2, 3, dtype=torch.int32))


def _host_half_grads(s, t1, t2, g, rounded):
    want = tuple((g.float() * rounded(x)).to(g.dtype) for x in (0.3, -1.7))

    def grads():
        leaves = [t.clone().requires_grad_() for t in (t1, s)]
        return torch.autograd.grad(safe_ops.accumulate(leaves, [0.3, -1.7]), leaves, g)

    return grads, want


# ---- CUDA ----

def _cuda_groups_and_tails(k, dtype, n):
    torch.manual_seed(k)
    # Sliced on the device: odd operands start one element past 16-byte alignment (a .to() after slicing would
    # copy them to a fresh aligned buffer).
    base = torch.randn(k, n + 1, device="cuda", dtype=torch.float64).to(dtype)
    xs = [base[i, 1:] if i % 2 else base[i, :n] for i in range(k)]
    assert k == 1 or xs[1].data_ptr() % 16 != 0
    w = [0.25 * (i + 1) for i in range(k)]
    exact = sum(x.double() * wi for x, wi in zip(xs, w))
    for out in (safe_ops.accumulate(xs, w),
                safe_ops.accumulate(xs, torch.tensor(w, device="cuda", dtype=dtype))):
        tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-6)
        torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol * k)
    total = torch.randn(n, device="cuda", dtype=dtype)
    expected = total.double() + exact
    assert safe_ops.accumulate_(total, xs, w) is total
    torch.testing.assert_close(total.double(), expected, rtol=2e-2 if dtype == torch.bfloat16 else 2e-3, atol=1e-2 * k)


def _cuda_runs_on_the_current_stream():
    stream = torch.cuda.Stream()
    x = torch.randn(1 << 20, device="cuda")
    with torch.cuda.stream(stream):
        y = safe_ops.accumulate([x, x, x], [1.0, 2.0, 3.0])
        z = safe_ops.add_(torch.zeros_like(x), y)
    stream.synchronize()
    torch.testing.assert_close(z, 6 * x)


def _cuda_weights_tensor_backward_and_no_host_sync():
    xs = [torch.randn(4096, device="cuda", requires_grad=True) for _ in range(10)]
    w = torch.randn(10, device="cuda", requires_grad=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = safe_ops.accumulate(xs, w)
        grads = torch.autograd.grad(out.sum(), xs + [w])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for i in range(10):
        torch.testing.assert_close(grads[i], w.detach()[i].expand(4096))
    torch.testing.assert_close(grads[10], torch.stack([x.detach().sum() for x in xs]))


def _cuda_64bit_indexing():
    n = (1 << 31) + 17
    free, _ = torch.cuda.mem_get_info()
    if free < 4 * n * 2 + (1 << 30):
        pytest.skip("not enough GPU memory for a 2^31-element float16 case")
    a = torch.ones(n, device="cuda", dtype=torch.float16)
    b = torch.full((n,), 2.0, device="cuda", dtype=torch.float16)
    out = safe_ops.accumulate([a, b], [1.0, 0.5])
    assert out[-1].item() == 2.0 and out[0].item() == 2.0 and out[n // 2].item() == 2.0
    del out
    assert safe_ops.add_(a, b) is a
    assert a[-1].item() == 3.0


def _cuda_half_gradients_are_the_numbers_times_grad(dtype):
    """grad * number with the number rounded to the dtype, as torch's CUDA kernels read it."""
    torch.manual_seed(1)
    s, t1, g = (torch.randn(4099, device="cuda", dtype=dtype) for _ in range(3))
    xs = [x.clone().requires_grad_() for x in (s, t1)]
    got = torch.autograd.grad(safe_ops.accumulate(xs, [0.3, -1.7]), xs, g)
    assert torch.equal(got[0], g * 0.3) and torch.equal(got[1], g * -1.7)


def _cuda_weight_gradients_are_deterministic():
    """float64 weight gradients (dot_many) have the same bits from run to run: no atomics."""
    xs = [torch.randn(1 << 20, device="cuda", dtype=torch.float64) for _ in range(10)]
    g = torch.randn(1 << 20, device="cuda", dtype=torch.float64)
    w = torch.randn(10, device="cuda", dtype=torch.float64, requires_grad=True)
    first = torch.autograd.grad(safe_ops.accumulate(xs, w), w, g)[0]
    for _ in range(5):
        assert torch.equal(torch.autograd.grad(safe_ops.accumulate(xs, w), w, g)[0], first)
    torch.testing.assert_close(first, torch.stack([(g * x).sum() for x in xs]))


OP = OpInfo(
    "accumulate", reference, _samples, lambda s, d: d in (torch.float32, torch.float64), _names, _saved,
    update=lambda t, o: ((t, [o, o], [0.5, -1.5]), {}), error_inputs=_errors,
    bench=lambda a, b, c: (([a, b, c], [1.0, 2.0, 3.0]), {}), streams=4, backward_streams=4,
    ref_inplace=reference_inplace,
    torch_inplace_update=_torch_inplace_update,
    prefetch=_prefetch,
    backward_vmap_cases=_backward_vmap_cases,
    dtensor=(DTensorCase("accumulate", lambda a, b, c, w: safe_ops.accumulate([a, b, c], [0.5, 2.0, -1.0]),
                         lambda a, b, c, w: 0.5 * a + 2.0 * b - c, 3),
             DTensorCase("accumulate_wt", lambda a, b, c, w: safe_ops.accumulate([a, b, c], w(a)),
                         lambda a, b, c, w: w(a)[0] * a + w(a)[1] * b + w(a)[2] * c, 3,
                         weight_grad=(lambda xs: safe_ops.accumulate(xs[:3], xs[3]),
                                      lambda xs: xs[3][0] * xs[0] + xs[3][1] * xs[1] + xs[3][2] * xs[2],
                                      lambda fulls, weights: weights, 4))),
    dtensor_inplace=(lambda a, b: safe_ops.accumulate_(a, [b, b], [2.0, 0.5]), lambda a, b: a.add_(b, alpha=2.5)),
    # with one member: [b, b] would be redistributed once per listing, torch's add_ once.
    dtensor_partial_inplace=(lambda a, b: safe_ops.accumulate_(a, [b], [2.5]), lambda a, b: a.add_(b, alpha=2.5)),
    host_half_grads=_host_half_grads,
    skips=(
        ("bitwise", "torch has no op of this name to match bit for bit: the documented order is checked by `prefetch`"
         " and test_ops' exactness"),
        ("grad_bitwise", "torch has no op of this name: gradients against the reference in test_ops"),
        ("fuzz", "the fuzz tests compare with torch's op of the same name; there is none"),
        ("out_args", "out= takes a list of tensors here: the row's own 'out' check"),
    ),
    checks=(
        Check("transforms", "vmap_batched_weights", _vmap_batched_weights),
        Check("out", "out", _out),
        *(Check("cuda", f"groups_and_tails-{k}-{str(d)[6:]}-{n}", lambda k=k, d=d, n=n: _cuda_groups_and_tails(k, d, n))
          for k in (1, 7, 8, 9, 17)
          for d in FLOAT_DTYPES
          for n in (1, 3, 4097, 1 << 20)),
        Check("cuda", "runs_on_the_current_stream", _cuda_runs_on_the_current_stream),
        Check("cuda", "weights_tensor_backward_and_no_host_sync", _cuda_weights_tensor_backward_and_no_host_sync),
        Check("cuda", "64bit_indexing", _cuda_64bit_indexing),
        Check("cuda", "weight_gradients_are_deterministic", _cuda_weight_gradients_are_deterministic),
        *(Check("cuda", f"half_gradients_are_the_numbers_times_grad-{str(d)[6:]}",
                lambda d=d: _cuda_half_gradients_are_the_numbers_times_grad(d))
          for d in (torch.float16, torch.bfloat16)),
    ),
)
