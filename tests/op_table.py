"""One table drives the tests (PyTorch's OpInfo idea, small): a row per op with the safe_ops function, the
torch reference, and a sample-input generator. Parity, gradcheck, opcheck, saved-tensor accounting, bad
input and compile tests all iterate it, so a new op is tested the moment its row exists."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Sequence

import torch

import safe_ops

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    desc: str = ""
    large: bool = False  # too big for gradcheck

    def tensors(self) -> List[torch.Tensor]:
        found = []
        for a in self.args:
            if isinstance(a, torch.Tensor):
                found.append(a)
            elif isinstance(a, (list, tuple)):
                found += [t for t in a if isinstance(t, torch.Tensor)]
        return found


def _make(shape, dtype, device, layout="contiguous", low=-2.0, high=2.0):
    """A tensor of `shape` in one of several memory layouts (same values whatever the layout)."""
    def rand(s):
        return torch.empty(s, dtype=torch.float64, device=device).uniform_(low, high).to(dtype)

    if layout == "contiguous":
        return rand(shape)
    if layout == "transposed":  # shape (m, n) stored as (n, m).t()
        return rand(tuple(reversed(shape))).t() if len(shape) == 2 else rand(shape)
    if layout == "sliced":  # every other column
        return rand(shape[:-1] + (shape[-1] * 2,))[..., ::2]
    if layout == "offset":  # data pointer one element past an aligned allocation
        return rand((1 + int(torch.Size(shape).numel()),))[1:].view(shape)
    if layout == "expanded":  # stride 0 along the first dimension
        return rand((1,) + tuple(shape[1:])).expand(shape)
    raise ValueError(layout)


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
        a = _make(shape_a, dtype, device, layout_a).requires_grad_(requires_grad)
        b = _make(shape_b, dtype, device, layout_b).requires_grad_(requires_grad)
        desc = f"{shape_a}/{layout_a}+{shape_b}/{layout_b}"
        yield Sample((a, b), {}, desc, large)
        if not large:
            yield Sample((a, b), {"alpha": 2.5}, desc + " alpha=2.5", large)
    if with_numbers:
        a = _make((3, 4), dtype, device).requires_grad_(requires_grad)
        yield Sample((a, 2), {}, "number 2")
        yield Sample((a, 0.1), {"alpha": -3}, "number 0.1 alpha=-3")
        yield Sample((a.t(), -1.5), {}, "transposed, number")


def add_samples(dtype, device, requires_grad=False):
    return _binary_samples(dtype, device, requires_grad, with_numbers=True)


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


def accumulate_samples(dtype, device, requires_grad=False):
    for shapes, layouts, large in ACCUMULATE_CASES:
        xs = [_make(s, dtype, device, l).requires_grad_(requires_grad) for s, l in zip(shapes, layouts)]
        k = len(xs)
        desc = f"K={k} {shapes[0]}"
        yield Sample((xs,), {}, desc + " weights=None", large)
        yield Sample((xs, [0.5 * (i + 1) - 1 for i in range(k)]), {}, desc + " weights=list", large)
        w = torch.linspace(-1, 2, k, dtype=dtype, device=device).requires_grad_(requires_grad)
        yield Sample((xs, w), {}, desc + " weights=tensor", large)


def addcmul_samples(dtype, device, requires_grad=False):
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
        args = tuple(_make(s, dtype, device).requires_grad_(requires_grad) for s in shapes)
        yield Sample(args, {}, f"{shapes}", large)
        yield Sample(args, {"value": -0.5}, f"{shapes} value=-0.5", large)
    t = tuple(_make((3, 4), dtype, device, l).requires_grad_(requires_grad) for l in ("transposed", "sliced", "offset"))
    yield Sample(t, {"value": 2}, "transposed/sliced/offset value=2")


def lerp_samples(dtype, device, requires_grad=False):
    cases = [((), (), ()), ((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((4,), (3, 4), ()),
             ((0,), (0,), (0,)), ((65537,), (65537,), (65537,))]
    for sa, sb, sw in cases:
        large = sa == (65537,)
        a = _make(sa, dtype, device).requires_grad_(requires_grad)
        b = _make(sb, dtype, device).requires_grad_(requires_grad)
        for w in (0.3, 0.75, -0.2):
            yield Sample((a, b, w), {}, f"{sa},{sb} weight={w}", large)
        wt = _make(sw, dtype, device, low=-0.5, high=1.5).requires_grad_(requires_grad)
        yield Sample((a, b, wt), {}, f"{sa},{sb} weight tensor {sw}", large)
    a, b = _make((3, 4), dtype, device, "transposed"), _make((3, 4), dtype, device, "expanded")
    yield Sample((a.requires_grad_(requires_grad), b.requires_grad_(requires_grad), 0.9), {}, "transposed/expanded")


def accumulate_ref(tensors, weights=None):
    total = None
    for i, t in enumerate(tensors):
        term = t if weights is None else t * weights[i]
        total = term if total is None else total + term
    return total


def _is_exact_add(sample: Sample, dtype) -> bool:
    return dtype in (torch.float32, torch.float64) and sample.kwargs.get("alpha", 1) == 1


@dataclass
class OpInfo:
    name: str
    op: Callable
    ref: Callable
    samples: Callable
    inplace: Callable
    overloads: Sequence  # torch.ops overloads exercised by the samples (for opcheck)
    exact: Callable[[Sample, torch.dtype], bool]
    # names of the tensor arguments in sample order, and which of them the op saves for a given set of
    # arguments requiring grad (a function of the sample and the frozenset of requiring names).
    arg_names: Callable[[Sample], List[str]]
    expected_saved: Callable[[Sample, frozenset], frozenset]


def _binary_names(sample):
    return ["input", "other"] if isinstance(sample.args[1], torch.Tensor) else ["input"]


def _accumulate_names(sample):
    names = [f"x{i}" for i in range(len(sample.args[0]))]
    if len(sample.args) > 1 and isinstance(sample.args[1], torch.Tensor):
        names.append("weights")
    return names


def _accumulate_saved(sample, requiring):
    if "weights" not in _accumulate_names(sample):
        return frozenset()
    saved = set()
    if "weights" in requiring:
        saved |= {n for n in _accumulate_names(sample) if n != "weights"}
    if requiring - {"weights"}:
        saved.add("weights")
    return frozenset(saved)


def _addcmul_saved(sample, requiring):
    saved = set()
    if "tensor1" in requiring:
        saved.add("tensor2")
    if "tensor2" in requiring:
        saved.add("tensor1")
    return frozenset(saved)


def _lerp_names(sample):
    return ["input", "end", "weight"] if isinstance(sample.args[2], torch.Tensor) else ["input", "end"]


def _lerp_saved(sample, requiring):
    if len(_lerp_names(sample)) == 2:
        return frozenset()
    saved = set()
    if requiring & {"input", "end"}:
        saved.add("weight")
    if "weight" in requiring:
        saved |= {"input", "end"}
    return frozenset(saved)


ops = torch.ops.safe_ops
OP_TABLE = [
    OpInfo("add", safe_ops.add, torch.add, add_samples, safe_ops.add_, [ops.add.Tensor, ops.add.Scalar],
           _is_exact_add, _binary_names, lambda s, r: frozenset()),
    OpInfo("sub", safe_ops.sub, torch.sub, add_samples, safe_ops.sub_, [ops.sub.Tensor, ops.sub.Scalar],
           _is_exact_add, _binary_names, lambda s, r: frozenset()),
    OpInfo("accumulate", safe_ops.accumulate, accumulate_ref, accumulate_samples, safe_ops.accumulate_,
           [ops.accumulate.default, ops.accumulate.weights_tensor],
           lambda s, d: d in (torch.float32, torch.float64), _accumulate_names, _accumulate_saved),
    # torch's addcmul and lerp kernels contract a*b+c into FMAs: parity within rounding, not bit for bit.
    OpInfo("addcmul", safe_ops.addcmul, torch.addcmul, addcmul_samples, safe_ops.addcmul_, [ops.addcmul.default],
           lambda s, d: False, lambda s: ["input", "tensor1", "tensor2"], _addcmul_saved),
    OpInfo("lerp", safe_ops.lerp, torch.lerp, lerp_samples, safe_ops.lerp_, [ops.lerp.Scalar, ops.lerp.Tensor],
           lambda s, d: False, _lerp_names, _lerp_saved),
]


def op_ids():
    return [info.name for info in OP_TABLE]


def flat_tensors(sample: Sample) -> List[torch.Tensor]:
    """The sample's tensor arguments in the order of OpInfo.arg_names."""
    return sample.tensors()


def replace_tensors(sample: Sample, fn: Callable[[torch.Tensor], torch.Tensor]) -> Sample:
    def conv(a):
        if isinstance(a, torch.Tensor):
            return fn(a)
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return type(a)(fn(t) for t in a)
        return a

    return Sample(tuple(conv(a) for a in sample.args), dict(sample.kwargs), sample.desc, sample.large)


def check_gradients(info: OpInfo, device: str, gradgrad: bool = True) -> int:
    """gradcheck (and gradgradcheck) in float64 over the op's small samples; returns how many ran."""
    torch.manual_seed(0)
    n = 0
    for sample in info.samples(torch.float64, device, requires_grad=True):
        if sample.large:
            continue
        # gradcheck's finite differences need non-overlapping inputs: materialise expanded ones (the
        # broadcast samples cover the same gradient math).
        sample = replace_tensors(sample, lambda t: t.detach().contiguous().requires_grad_()
                                 if 0 in t.stride() and t.numel() > 1 else t)
        tensors = sample.tensors()
        if any(t.numel() == 0 for t in tensors):
            continue

        def fn(*flat, sample=sample):
            it = iter(flat)
            rebuilt = replace_tensors(sample, lambda t: next(it))
            return info.op(*rebuilt.args, **rebuilt.kwargs)

        assert torch.autograd.gradcheck(fn, tensors), sample.desc
        if gradgrad:
            assert torch.autograd.gradgradcheck(fn, tensors), sample.desc
        n += 1
    return n
