"""safe_ops.lerp: input + weight * (end - input) (the EMA update)."""
from typing import List

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, jacrev, jvp, vmap

import safe_ops

from .core import BitwiseCase, Check, DTensorCase, ErrorInput, ForeachInfo, FuzzInfo, OpInfo, Sample, make_tensor
from .samples import A34, B5, INTS, dtensor_inplace

N = 4099


def _samples(dtype, device, requires_grad=False):
    cases = [((), (), ()), ((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((4,), (3, 4), ()),
             ((0,), (0,), (0,)), ((65537,), (65537,), (65537,))]
    for sa, sb, sw in cases:
        large = sa == (65537,)
        a = make_tensor(sa, dtype, device).requires_grad_(requires_grad)
        b = make_tensor(sb, dtype, device).requires_grad_(requires_grad)
        for w in (0.3, 0.75, -0.2):
            yield Sample((a, b, w), {}, f"{sa},{sb} weight={w}", large)
        wt = make_tensor(sw, dtype, device, low=-0.5, high=1.5).requires_grad_(requires_grad)
        yield Sample((a, b, wt), {}, f"{sa},{sb} weight tensor {sw}", large)
    a, b = make_tensor((3, 4), dtype, device, "transposed"), make_tensor((3, 4), dtype, device, "expanded")
    yield Sample((a.requires_grad_(requires_grad), b.requires_grad_(requires_grad), 0.9), {}, "transposed/expanded")



def _names(sample):
    return ["input", "end", "weight"] if isinstance(sample.args[2], torch.Tensor) else ["input", "end"]


def _saved(sample, requiring):
    if len(_names(sample)) == 2:
        return frozenset()
    saved = set()
    if requiring & {"input", "end"}:
        saved.add("weight")
    if "weight" in requiring:
        saved |= {"input", "end"}
    return frozenset(saved)


def _errors() -> List[ErrorInput]:
    return [
        ErrorInput("lerp shapes", "op", (A34, B5, 0.5), RuntimeError, lambda: torch.lerp(A34, B5, 0.5)),
        ErrorInput("lerp_ shapes", "inplace", (A34, B5, 0.5), RuntimeError, lambda: torch.lerp(A34, B5, 0.5)),
        ErrorInput("lerp dtype mismatch", "op", (A34, A34.double(), 0.5), RuntimeError,
                   lambda: torch.lerp(A34, A34.double(), 0.5)),
        ErrorInput("integer lerp", "op", (INTS, INTS, 0.5), RuntimeError, lambda: torch.lerp(INTS, INTS, 0.5)),
        ErrorInput("lerp_ dtype mismatch", "inplace", (A34.clone(), A34.double(), 0.5), RuntimeError,
                   lambda: A34.clone().lerp_(A34.double(), 0.5)),
    ]



def _opinfo_errors(t, err):
    return [err(t(3), t(4), 0.5), err(t(3), t(3, dtype=torch.float64), 0.5), err(t(3), t(3), t(3, dtype=torch.float64)),
            err(t(3, dtype=torch.int64), t(3, dtype=torch.int64), 0.5), err(t(3), t(3), t(2, 2))]


def _zero_sign_is_free(args) -> bool:
    """The one known difference: lerp with a tensor weight holding exactly 1 gives end's zero sign by two formulas
    in torch, (w - 1)(end - input) + end in its vectorised body and end - (end - input)(1 - w) in its scalar tails,
    whose zeros differ in sign; safe_ops uses the second everywhere (README: "What still differs"). A number
    weight of 1 runs torch's own kernel: no freedom there."""
    weight = args[2] if len(args) > 2 else None
    return isinstance(weight, torch.Tensor) and bool((weight == 1).any())


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


# At a number weight of exactly 1 torch's zeros take their sign from its loop (vectorised body and scalar tail
# compute two forms of the formula): safe_ops runs torch's kernel there, so even the zero signs are torch's.
def _at_weight_one_keeps_torch_zero_signs(dtype, weight):
    g = torch.Generator().manual_seed(2)
    start = torch.randn(N, generator=g).to(dtype)
    end = torch.zeros(N, dtype=dtype)
    end[::3] = -0.0
    expected = torch.lerp(start, end, weight)
    assert not torch.equal(_bits(expected), _bits(end)) or dtype == torch.float64  # torch's zeros do differ
    assert torch.equal(_bits(safe_ops.lerp(start, end, weight)), _bits(expected))
    assert torch.equal(_bits(safe_ops.lerp_(start.clone(), end, weight)), _bits(start.clone().lerp_(end, weight)))
    ours, theirs = [start.clone(), start[1:].clone()], [start.clone(), start[1:].clone()]
    safe_ops.foreach_lerp_(ours, [end, end[1:]], weight)
    torch._foreach_lerp_(theirs, [end, end[1:]], weight)
    assert all(torch.equal(_bits(o), _bits(t)) for o, t in zip(ours, theirs))


def _inplace_tensor_weight_tangent_reads_the_original_input():
    a, b, w = torch.randn(5), torch.randn(5), torch.rand(5)
    ta, tb, tw = torch.randn(5), torch.randn(5), torch.randn(5)
    with fwAD.dual_level():
        want = fwAD.unpack_dual(torch.lerp(fwAD.make_dual(a, ta), fwAD.make_dual(b, tb), fwAD.make_dual(w, tw)))
        target = fwAD.make_dual(a.clone(), ta.clone())
        torch.ops.safe_ops.lerp_inplace(target, fwAD.make_dual(b, tb), fwAD.make_dual(w, tw))
        got = fwAD.unpack_dual(target)
    torch.testing.assert_close(got.primal, want.primal)
    torch.testing.assert_close(got.tangent, want.tangent)


def _reverse_over_forward():
    from torch.func import hessian

    x, y = (torch.randn(5, dtype=torch.float64) for _ in range(2))
    w = torch.rand(5, dtype=torch.float64)
    got = jacrev(jacfwd(lambda a, w: safe_ops.lerp(a, y, w).pow(3).sum(), argnums=(0, 1)), argnums=(0, 1))(x, w)
    want = hessian(lambda a, w: torch.lerp(a, y, w).pow(3).sum(), argnums=(0, 1))(x, w)
    torch.testing.assert_close(got, want)


def _jvp_of_vmap():
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    tx = torch.randn_like(x)
    got = jvp(vmap(lambda a: safe_ops.lerp(a, y, 0.3)), (x,), (tx,))
    want = jvp(vmap(lambda a: torch.lerp(a, y, 0.3)), (x,), (tx,))
    torch.testing.assert_close(got, want)


def _backward_vmap_cases(B):
    g, x, v = torch.randn(B, 3, 4), torch.randn(B, 3, 4), torch.randn(4)
    d = x.abs() + 0.5
    return [("weight", torch.ops.safe_ops.lerp_backward.default, (g[0], x, v, d, [True, True, True]),
             (None, 0, None, 0, None))]


def _cuda_strided_inputs_match_torch():
    torch.manual_seed(0)
    a = torch.randn(3, 1032, dtype=torch.float32, device="cuda")
    b = torch.randn(1032, 3, dtype=torch.float32, device="cuda").t()
    flat_a, flat_b = a.reshape(-1)[1:3000], a.reshape(-1)[5:3004]  # contiguous, 4 and 20 bytes past alignment
    cases = [(a[:, 1:], b[:, 1:]), (a, b), (a[:, ::2], b[:, ::2]), (flat_a, flat_b), (flat_a, a.reshape(-1)[:2999])]
    for ca, cb in cases:
        torch.testing.assert_close(safe_ops.lerp(ca, cb, 0.3), torch.lerp(ca, cb, 0.3))


def _host_half_grads(s, t1, t2, g, rounded):
    w = 0.3
    want = ((g.float() * rounded(1 - w)).to(g.dtype), (g.float() * rounded(w)).to(g.dtype))

    def grads():
        leaves = [t.clone().requires_grad_() for t in (s, t1)]
        return torch.autograd.grad(safe_ops.lerp(*leaves, w), leaves, g)

    return grads, want


OP = OpInfo(
    "lerp", torch.lerp, _samples, lambda s, d: True, _names, _saved,
    update=lambda t, o: ((t, o, 0.25), {}), error_inputs=_errors,
    bench=lambda a, b, c: ((a, b, 0.1), {}), torch_twin=torch.lerp, backward_streams=3,
    opinfo_error_inputs=_opinfo_errors,
    bitwise=(BitwiseCase("lerp_small", lambda m, a, b, c, w: m.lerp(a, b, 0.3), half=True),
             BitwiseCase("lerp_large", lambda m, a, b, c, w: m.lerp(a, b, 0.7), half=True),
             BitwiseCase("lerp_tensor", lambda m, a, b, c, w: m.lerp(a, b, w), half=True)),
    bitwise_inplace=lambda b, c: ((b, 0.3), {}),
    grad_bitwise=(("lerp_number", lambda m, a, b, c, k: m.lerp(a, b, k), 2),
                  ("lerp_tensor", lambda m, a, b, c, k: m.lerp(a, b, c), 3)),
    fuzz=FuzzInfo(("end",), weight=True, zero_sign_is_free=_zero_sign_is_free),
    out_args=lambda a, b, c: ((a, c, 0.3), {}),
    twin_cases=lambda dtype, t, number, pos: [((t(3, 4), t(3, 4), number), {}), ((t(3, 4), t(3, 4), t(4)), {})]
    if dtype.is_complex else [],
    complex_grad_cases=lambda C: [
        ("tensor_weight", (torch.randn(5, dtype=C), torch.randn(5, dtype=C), torch.randn(5, dtype=C)), {}),
        ("complex_number_weight", (torch.randn(5, dtype=C), torch.randn(5, dtype=C), 0.25 + 0.5j), {})],
    backward_vmap_cases=_backward_vmap_cases,
    dtensor=(DTensorCase("lerp_scalar", lambda a, b, c, w: safe_ops.lerp(a, b, 0.3),
                         lambda a, b, c, w: torch.lerp(a, b, 0.3), 2),
             # the weight is the third operand, of the operands' placement
             DTensorCase("lerp_tensor", lambda a, b, c, w: safe_ops.lerp(a, b, c),
                         lambda a, b, c, w: torch.lerp(a, b, c), 3,
                         weight_grad=(lambda xs: safe_ops.lerp(*xs[:3]), lambda xs: torch.lerp(*xs[:3]),
                                      lambda fulls, weights: fulls[2], 3))),
    dtensor_inplace=dtensor_inplace("lerp", {}, lambda b: (b, 0.25)),
    cuda_half_grads=(("small", lambda f, s, x, y: f.lerp(x, y, 0.3), (0, 1)),
                     ("large", lambda f, s, x, y: f.lerp(x, y, 0.7), (0, 1))),
    host_half_grads=_host_half_grads,
    skips=(("compiled, a complex number argument", "torch's own lerp with a complex number weight does not compile "
            "either (inductor: BackendCompilerFailed, torch 2.14.1)"),),
    checks=(
        *(Check("bitwise", f"at_weight_one_keeps_torch_zero_signs-{str(d)[6:]}-{w!r}",
                lambda d=d, w=w: _at_weight_one_keeps_torch_zero_signs(d, w))
          for w in (1, 1.0, 1 - 1e-10)  # the last is 1 in float32
          for d in (torch.float32, torch.float64, torch.bfloat16)),
        Check("transforms", "inplace_tensor_weight_tangent_reads_the_original_input",
              _inplace_tensor_weight_tangent_reads_the_original_input),
        Check("transforms", "reverse_over_forward", _reverse_over_forward),
        Check("transforms", "jvp_of_vmap", _jvp_of_vmap),
        Check("cuda", "strided_inputs_match_torch", _cuda_strided_inputs_match_torch),
    ),
)

FOREACH = ForeachInfo(
    "foreach_lerp",
    lambda ts, xs, w: torch._foreach_lerp_(ts, xs[0], w),
    dtensor_number=0.3,
    cuda_half_number=1.0,  # the weight at which torch's zero signs come from its loop
    bad_inputs=(
        ("list lengths", lambda a: safe_ops.foreach_lerp_(a, [torch.randn(3)], 0.5), RuntimeError,
         lambda a: torch._foreach_lerp_(a, [torch.randn(3)], 0.5)),
        ("weights length", lambda a: safe_ops.foreach_lerp_(a, [t + 1 for t in a], [0.5]), RuntimeError,
         lambda a: torch._foreach_lerp_(a, [t + 1 for t in a], [0.5])),
        ("empty list", lambda a: safe_ops.foreach_lerp_([], [], 0.5), RuntimeError,
         lambda a: torch._foreach_lerp_([], [], 0.5)),
        ("device of the last operand",
         lambda a: safe_ops.foreach_lerp_(a, [torch.randn(3), torch.randn(4, device="meta")], 0.5), RuntimeError,
         lambda a: torch._foreach_lerp_(a, [torch.randn(3), torch.randn(4, device="meta")], 0.5)),
        ("string weight", lambda a: safe_ops.foreach_lerp_(a, a, "x"), TypeError,
         lambda a: torch._foreach_lerp_(a, a, "x")),
        ("per-member tensor of the wrong length",
         lambda a: safe_ops.foreach_lerp_(a, a, torch.tensor([0.5, 0.5, 0.5])), RuntimeError, None),
    ),
)
