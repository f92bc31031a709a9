"""safe_ops.add: input + alpha * other."""
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import vmap

import safe_ops

from .core import BitwiseCase, Check, DTensorCase, ForeachInfo
from .samples import binary_row, dtensor_inplace

N = 4099
B = 3  # vmap batch size


def _broadcast_one_element_differs_at_most_in_torch_scalar_tail():
    # torch computes a + alpha*b with b a broadcast one-element tensor fused in its vectorised body but not in the
    # tail its scalar loop handles (under 2 vector widths at the end of each row); safe_ops fuses every element.
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(N, generator=g).to(dtype) for _ in range(2))
        one = b[:1].expand(N)
        bad = (safe_ops.add(a, one, alpha=1.7) != torch.add(a, one, alpha=1.7)).nonzero().flatten()
        assert bad.numel() == 0 or bad.min().item() >= N - N % 64 - 64


def _issue_example_add_of_duals_has_a_tangent():
    x, t = torch.randn(4), torch.randn(4)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, t)
        out = fwAD.unpack_dual(safe_ops.add(d, d))
        assert out.tangent is not None
        torch.testing.assert_close(out.tangent, 2 * t)
        # The result's tangent is its own: an in-place op on the result leaves the input's tangent alone.
        plain = fwAD.unpack_dual(safe_ops.add(d, 1.0))
        assert plain.tangent.data_ptr() != t.data_ptr()


def _inplace_on_a_view_updates_the_base_tangent():
    # Views of a dual tensor share their base's tangent: an in-place op must update that object, not replace it.
    t = torch.randn(2, 3)
    with fwAD.dual_level():
        d = fwAD.make_dual(torch.zeros(2, 3), t.clone())
        other = fwAD.make_dual(torch.randn(3), torch.ones(3))
        torch.ops.safe_ops.add_inplace(d[0], other, alpha=2)
        torch.testing.assert_close(fwAD.unpack_dual(d).tangent, torch.stack([t[0] + 2, t[1]]))
        # A view without a tangent gets one, and so does its base (as torch's in-place ops do).
        plain = torch.zeros(2, 3)
        torch.ops.safe_ops.add_inplace(plain[1], other)
        torch.testing.assert_close(fwAD.unpack_dual(plain).tangent, torch.stack([torch.zeros(3), torch.ones(3)]))


def _tangent_dtype_follows_promotion(dtypes):
    # Only the lower-precision operand is dual: the tangent still has the result's dtype, as in torch.
    a, b = torch.randn(4, dtype=dtypes[0]), torch.randn(4, dtype=dtypes[1])
    ta = torch.randn_like(a)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(safe_ops.add(fwAD.make_dual(a, ta), b))
        want = fwAD.unpack_dual(torch.add(fwAD.make_dual(a, ta), b))
        assert got.tangent.dtype == want.tangent.dtype == got.primal.dtype
        torch.testing.assert_close(got.tangent, want.tangent)


PROMOTIONS = [(torch.float32, torch.float64), (torch.float16, torch.float32), (torch.float64, torch.bfloat16)]


def _vmap_keeps_per_sample_promotion():
    # A batched per-sample 0-dim float64 operand does not promote a float32 result, as outside vmap.
    x, y = torch.randn(4), torch.randn(B, dtype=torch.float64)
    got = vmap(lambda s: safe_ops.add(x, s))(y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.stack([torch.add(x, s) for s in y]))


def _vmap_inplace_into_unbatched_target_raises_like_torch():
    import pytest

    x, y = torch.zeros(3), torch.randn(B, 3)
    with pytest.raises(RuntimeError):
        vmap(lambda o: x.add_(o))(y)
    with pytest.raises(RuntimeError, match="vmap"):
        vmap(lambda o: torch.ops.safe_ops.add_inplace(x, o))(y)


def _number_errors_are_torchs(kwargs, error):
    import pytest

    ints = torch.arange(4)
    for op in (torch.add, safe_ops.add):
        with pytest.raises(error):
            op(ints, ints, **kwargs)
    x = torch.randn(4)
    for op in (torch.add, safe_ops.add):
        with pytest.raises(RuntimeError, match="complex"):
            op(x, x, alpha=1j)


def _dual_tensors_keep_their_complex_tangent():
    x = torch.randn(4, dtype=torch.complex128)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, torch.ones_like(x))
        tangent = fwAD.unpack_dual(safe_ops.add(d, d, alpha=1j)).tangent
    assert torch.equal(tangent, torch.full_like(x, 1 + 1j))


def _out_aliasing_an_input_like_torch():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    want = torch.add(a.clone(), b, alpha=3, out=None)
    x = a.clone()
    assert safe_ops.add(x, b, alpha=3, out=x) is x and torch.equal(x, want)


def _cuda_unaligned_and_strided_inputs_match_cpu():
    torch.manual_seed(0)
    # Moved first, sliced on the device: .cuda() of a view would make a fresh aligned contiguous tensor.
    a = torch.randn(3, 1032, dtype=torch.float32, device="cuda")
    b = torch.randn(1032, 3, dtype=torch.float32, device="cuda").t()
    flat_a, flat_b = a.reshape(-1)[1:3000], a.reshape(-1)[5:3004]  # contiguous, 4 and 20 bytes past alignment
    cases = [(a[:, 1:], b[:, 1:]), (a, b), (a[:, ::2], b[:, ::2]), (flat_a, flat_b), (flat_a, a.reshape(-1)[:2999])]
    assert flat_a.data_ptr() % 16 != 0 and flat_a.is_contiguous()
    for ca, cb in cases:
        got = safe_ops.add(ca, cb, alpha=1)
        assert torch.equal(got.cpu(), safe_ops.add(ca.cpu(), cb.cpu()))


OP = binary_row(
    "add", torch.add,
    update=lambda t, o: ((t, o), {"alpha": 2}),
    bitwise=(BitwiseCase("add", lambda m, a, b, c, w: m.add(a, b, alpha=-0.3)),
             BitwiseCase("add_scalar", lambda m, a, b, c, w: m.add(a, 0.1, alpha=-0.3)),
             BitwiseCase("add_unit_alpha", lambda m, a, b, c, w: m.add(a, b), half=True)),
    bitwise_inplace=lambda b, c: ((b,), {"alpha": -0.3}),
    out_args=lambda a, b, c: ((a, b), {"alpha": -0.5}),
    twin_cases=lambda dtype, t, number, pos: [((t(3, 4), t(4)), {"alpha": number}), ((t(3, 4), number), {})],
    complex_grad_cases=lambda C: [
        ("complex_alpha", (torch.randn(5, dtype=C), torch.randn(5, dtype=C)), {"alpha": 2 - 1j}),
        # real tensors, complex tensor: promotes to complex
        ("real_and_complex", (torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=C)), {})],
    dtensor=(DTensorCase("add", lambda a, b, c, w: safe_ops.add(a, b, alpha=2),
                         lambda a, b, c, w: torch.add(a, b, alpha=2), 2),),
    dtensor_inplace=dtensor_inplace("add", {"alpha": 2}),
    checks=(
        Check("bitwise", "broadcast_one_element_differs_at_most_in_torch_scalar_tail",
              _broadcast_one_element_differs_at_most_in_torch_scalar_tail),
        Check("transforms", "issue_example_add_of_duals_has_a_tangent", _issue_example_add_of_duals_has_a_tangent),
        Check("transforms", "inplace_on_a_view_updates_the_base_tangent", _inplace_on_a_view_updates_the_base_tangent),
        *(Check("transforms", f"tangent_dtype_follows_promotion-{d}", lambda d=d: _tangent_dtype_follows_promotion(d))
          for d in PROMOTIONS),
        Check("transforms", "vmap_keeps_per_sample_promotion", _vmap_keeps_per_sample_promotion),
        Check("transforms", "vmap_inplace_into_unbatched_target_raises_like_torch",
              _vmap_inplace_into_unbatched_target_raises_like_torch),
        Check("twin", "number_errors_are_torchs-alpha_float", lambda: _number_errors_are_torchs({"alpha": 0.5},
                                                                                                  RuntimeError)),
        Check("twin", "number_errors_are_torchs-alpha_bool", lambda: _number_errors_are_torchs({"alpha": True},
                                                                                                 RuntimeError)),
        Check("twin", "dual_tensors_keep_their_complex_tangent", _dual_tensors_keep_their_complex_tangent),
        Check("out", "out_aliasing_an_input_like_torch", _out_aliasing_an_input_like_torch),
        Check("cuda", "unaligned_and_strided_inputs_match_cpu", _cuda_unaligned_and_strided_inputs_match_cpu),
    ),
)

FOREACH = ForeachInfo(
    "foreach_add",
    lambda ts, xs, w: torch._foreach_add_(ts, xs[0], alpha=w),
    exact_at_one=True,
    cuda_half_number=0.3,  # alpha != 1
    bad_inputs=(
        ("last member's shape", lambda a: safe_ops.foreach_add_(a, [torch.randn(3), torch.randn(5)]), RuntimeError,
         lambda a: torch._foreach_add_(a, [torch.randn(3), torch.randn(5)])),
        ("integer member", lambda a: safe_ops.foreach_add_(a + [torch.arange(3)], a + [torch.arange(3)]), TypeError,
         None),
    ),
    skips=(("cuda_on_host.foreach_chunks", "float16 add_ with alpha != 1 is torch's on the CPU (csrc/ops/foreach.cpp); "
            "the multi-chunk walk runs once, on a foreach op every member of which is fused"),),
)
