"""Sample generators and error inputs shared by several ops' rows (binary input/other/alpha ops, ternary
input/tensor1/tensor2/value ops)."""
from __future__ import annotations

from typing import Callable, List

import torch

from .core import ErrorInput, Sample, make_tensor

# (shape_a, layout_a, shape_b, layout_b, large)
BINARY_CASES = [
    ((), "contiguous", (), "contiguous", False),
    ((5,), "contiguous", (), "contiguous", False),
    ((), "contiguous", (5,), "contiguous", False),
    ((0,), "contiguous", (0,), "contiguous", False),
    ((2, 0, 3), "contiguous", (3,), "contiguous", False),
    ((7,), "contiguous", (7,), "contiguous", False),
    ((3, 4), "contiguous", (4,), "contiguous", False),
    ((3, 1), "contiguous", (1, 4), "contiguous", False),
    ((2, 3, 4), "contiguous", (3, 1), "contiguous", False),
    ((3, 4), "transposed", (3, 4), "contiguous", False),
    ((3, 4), "transposed", (3, 4), "transposed", False),
    ((3, 4), "contiguous", (3, 4), "expanded", False),
    ((3, 5), "sliced", (3, 5), "contiguous", False),
    ((33,), "offset", (33,), "contiguous", False),
    ((65535,), "contiguous", (65535,), "contiguous", True),
    ((65537,), "offset", (65537,), "contiguous", True),
    ((2, 65536), "contiguous", (65536,), "contiguous", True),
]


def _binary_samples(dtype, device, requires_grad, with_numbers):
    for shape_a, layout_a, shape_b, layout_b, large in BINARY_CASES:
        a = make_tensor(shape_a, dtype, device, layout_a).requires_grad_(requires_grad)
        b = make_tensor(shape_b, dtype, device, layout_b).requires_grad_(requires_grad)
        desc = f"{shape_a}/{layout_a}+{shape_b}/{layout_b}"
        yield Sample((a, b), {}, desc, large)
        if not large:
            yield Sample((a, b), {"alpha": 2.5}, desc + " alpha=2.5", large)
    if with_numbers:
        a = make_tensor((3, 4), dtype, device).requires_grad_(requires_grad)
        yield Sample((a, 2), {}, "number 2")
        yield Sample((a, 0.1), {"alpha": -3}, "number 0.1 alpha=-3")
        yield Sample((a.t(), -1.5), {}, "transposed, number")


def binary_samples(dtype, device, requires_grad=False):
    """input and other (a tensor or a number), with and without alpha."""
    return _binary_samples(dtype, device, requires_grad, with_numbers=True)



def ternary_samples(dtype, device, requires_grad=False):
    """input, tensor1, tensor2 in several shapes and layouts, with and without value."""
    cases = [
        ((), (), ()),
        ((3, 4), (3, 4), (3, 4)),
        ((3, 4), (4,), (3, 1)),
        ((4,), (3, 4), (3, 4)),
        ((0, 2), (0, 2), (2,)),
        ((65537,), (65537,), (65537,)),
    ]
    for shapes in cases:
        large = shapes[0] == (65537,)
        args = tuple(make_tensor(s, dtype, device).requires_grad_(requires_grad) for s in shapes)
        yield Sample(args, {}, f"{shapes}", large)
        yield Sample(args, {"value": -0.5}, f"{shapes} value=-0.5", large)
    layouts = ("transposed", "sliced", "offset")
    t = tuple(make_tensor((3, 4), dtype, device, lay).requires_grad_(requires_grad) for lay in layouts)
    yield Sample(t, {"value": 2}, "transposed/sliced/offset value=2")


A34, B5 = torch.randn(3, 4), torch.randn(5)
INTS = torch.arange(4)


def binary_errors(name: str, torch_op: Callable) -> Callable[[], List[ErrorInput]]:
    return lambda: [
        ErrorInput(f"{name} shapes don't broadcast", "op", (A34, B5), RuntimeError, lambda: torch_op(A34, B5)),
        ErrorInput(f"{name}_ shapes don't broadcast", "inplace", (A34, B5), RuntimeError,
                   lambda: torch_op(A34, B5)),
        # Integer, bool and complex operands are torch's op's (csrc/core/twin.h), its errors too.
        ErrorInput(f"{name} integer tensors, float alpha", "op", (INTS, INTS), RuntimeError,
                   lambda: torch_op(INTS, INTS, alpha=0.5), {"alpha": 0.5}),
        ErrorInput(f"{name} bool alpha, float result", "op", (B5, B5), RuntimeError,
                   lambda: torch_op(B5, B5, alpha=True), {"alpha": True}),
        ErrorInput(f"{name} complex alpha, real result", "op", (B5, B5), RuntimeError,
                   lambda: torch_op(B5, B5, alpha=1j), {"alpha": 1j}),
        ErrorInput(f"{name}_ float result into an integer tensor", "inplace", (INTS.clone(), B5[:4]), RuntimeError,
                   lambda: INTS.clone().add_(B5[:4])),
    ]


def ternary_errors(name: str, torch_op: Callable) -> Callable[[], List[ErrorInput]]:
    return lambda: [
        ErrorInput(f"{name} shapes", "op", (A34, A34, B5), RuntimeError, lambda: torch_op(A34, A34, B5)),
        ErrorInput(f"{name}_ shapes", "inplace", (A34, A34, B5), RuntimeError, lambda: torch_op(A34, A34, B5)),
    ]




def _binary_names(sample):
    return ["input", "other"] if isinstance(sample.args[1], torch.Tensor) else ["input"]


def dtensor_inplace(name: str, kwargs: dict, operands: Callable = lambda b: (b,)):
    """(safe_ops.<name>_(a, *operands(b), **kwargs), Tensor.<name>_ alike): the in-place DTensor check's calls."""
    import safe_ops

    return (lambda a, b: getattr(safe_ops, name + "_")(a, *operands(b), **kwargs),
            lambda a, b: getattr(a, name + "_")(*operands(b), **kwargs))


def _binary_prefetch(name: str):
    def prefetch(dtype, g, n):
        import safe_ops

        a, b = (torch.randn(n, generator=g).to(dtype) for _ in range(2))
        return [(getattr(safe_ops, name + "_")(a.clone(), b, alpha=0.7), getattr(a.clone(), name + "_")(b, alpha=0.7))]

    return prefetch


def binary_opinfo_errors(t, err, torch_op):
    return [err(t(3), t(4)), err(t(3, dtype=torch.int64), t(3, dtype=torch.int64), alpha=0.5),
            err(t(2, 3), t(3), alpha=1j), err(t(2), "x")]


def binary_row(name: str, torch_op: Callable, **fields):
    """The row of an `input ± alpha * other` op (other a tensor or a number), like torch.<name>."""
    from .core import FuzzInfo, OpInfo

    defaults = dict(
        error_inputs=binary_errors(name, torch_op),
        bench=lambda a, b, c: ((a, b), {"alpha": 2}), torch_twin=torch_op,
        opinfo_error_inputs=lambda t, err: binary_opinfo_errors(t, err, torch_op),
        prefetch=_binary_prefetch(name),
        grad_bitwise=((name, lambda m, a, b, c, k: getattr(m, name)(a, b, alpha=k), 2),),
        fuzz=FuzzInfo(("other",), number_operands=True, scalar_kw="alpha"),
    )
    defaults.update(fields)
    # Bit for bit with torch.<name> in every floating dtype (csrc/<name>.cpp: alpha != 1 where torch's bits
    # depend on its loops is torch's kernel).
    return OpInfo(name, torch_op, binary_samples, lambda s, d: True, _binary_names, lambda s, r: frozenset(),
                  **defaults)


def ternary_opinfo_errors(t, err):
    return [err(t(3), t(4), t(3)), err(t(3), t(3), t(2, 2)), err(t(3), t(3), t(3), value="x")]


def _jacfwd_matches_jacrev_and_torch(name):
    from torch.func import jacfwd, jacrev

    import safe_ops

    fn, ref = getattr(safe_ops, name), getattr(torch, name)
    x, y, z = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64), torch.randn(3, 1)
    z = z.double().abs() + 0.5
    for argnums in (0, 1, 2, (0, 1, 2)):
        fwd = jacfwd(lambda a, b, c: fn(a, b, c, value=0.7), argnums=argnums)(x, y, z)
        rev = jacrev(lambda a, b, c: fn(a, b, c, value=0.7), argnums=argnums)(x, y, z)
        want = jacfwd(lambda a, b, c: ref(a, b, c, value=0.7), argnums=argnums)(x, y, z)
        torch.testing.assert_close(fwd, rev)
        torch.testing.assert_close(fwd, want)


def _reverse_over_forward(name):
    # grad of a jvp: the tangent formulas are differentiable in the primals.
    from torch.func import hessian, jacfwd, jacrev

    import safe_ops

    fn, ref = getattr(safe_ops, name), getattr(torch, name)
    x, y, z = (torch.randn(5, dtype=torch.float64) for _ in range(3))
    z = z.abs() + 0.5
    got = jacrev(jacfwd(lambda a, b: fn(a, b, z, value=0.3).pow(3).sum(), argnums=(0, 1)), argnums=(0, 1))(x, y)
    want = hessian(lambda a, b: ref(a, b, z, value=0.3).pow(3).sum(), argnums=(0, 1))(x, y)
    torch.testing.assert_close(got, want)


def ternary_transform_checks(name):
    from .core import Check

    return (Check("transforms", "jacfwd_matches_jacrev_and_torch", lambda: _jacfwd_matches_jacrev_and_torch(name)),
            Check("transforms", "reverse_over_forward", lambda: _reverse_over_forward(name)))


def value_op_half_grads(name):
    """host_half_grads of an `input + value * f(tensor1, tensor2)` op: the operand gradients with value 0.3."""
    def make(s, t1, t2, g, rounded):
        import safe_ops

        leaves = [t.clone().requires_grad_() for t in (t1, t2)]
        want = torch.autograd.grad(getattr(torch, name)(s, *leaves, value=rounded(0.3)), leaves, g)

        def grads():
            leaves = [t.clone().requires_grad_() for t in (t1, t2)]
            return torch.autograd.grad(getattr(safe_ops, name)(s, *leaves, value=0.3), leaves, g)

        return grads, want

    return make


# ---- foreach members -------------------------------------------------------------------------------------

def odd_members(dtype, device):
    """Shapes and layouts a parameter list can hold: 0-dim, empty, 1-D, big (several kernel chunks), channels_last,
    transposed, a strided slice, sizes that leave vector tails."""
    def t(*shape):
        return torch.randn(shape, device=device).to(dtype)

    def strided(shape, stride):  # not a view (the rules would copy a view), not contiguous
        return torch.empty_strided(shape, stride, device=device, dtype=dtype).copy_(t(*shape))

    return [t(), t(0), t(7), t(3, 5), t(70001), t(2, 3, 4, 5).to(memory_format=torch.channels_last),
            strided((5, 3), (1, 5)), strided((6, 5), (10, 2)), t(1, 1), t(4099)]


def like(members, dtype=None):
    """Operands for the members: their shapes, a layout of their own."""
    out = []
    for m in members:
        o = torch.randn(m.shape, device=m.device).to(dtype or m.dtype)
        out.append(o.t().contiguous().t() if m.dim() == 2 and m.stride(0) == 1 else o)  # a layout of its own
    return out


def foreach_args(info, n=3, seed=0):
    """n float64 members of 4 elements and the foreach op's operand lists, seeded."""
    gen = torch.Generator().manual_seed(seed)
    ts = [torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(n)]
    xs = info.operand_lists(lambda: [torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(n)])
    return ts, xs
