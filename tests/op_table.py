"""One table drives the tests and benchmarks (PyTorch's OpInfo idea, small): a row per declared op
(safe_ops/_declarations.py) with its torch reference, sample inputs, error inputs, an in-place update case and a
benchmark call. Parity, gradcheck, opcheck, saved-tensor accounting, bad input, in-place hazards, compile, the
GPU sanitizer and the per-op benchmarks all iterate it, so a new op is tested the moment its row exists; the
functions, overloads and in-place variants come from the declaration, not from here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

import safe_ops
import safe_ops._wrappers
from safe_ops._declarations import OPS

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


def make_tensor(shape, dtype, device, layout="contiguous", low=-2.0, high=2.0):
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
        xs = [make_tensor(s, dtype, device, lay).requires_grad_(requires_grad) for s, lay in zip(shapes, layouts)]
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
        args = tuple(make_tensor(s, dtype, device).requires_grad_(requires_grad) for s in shapes)
        yield Sample(args, {}, f"{shapes}", large)
        yield Sample(args, {"value": -0.5}, f"{shapes} value=-0.5", large)
    layouts = ("transposed", "sliced", "offset")
    t = tuple(make_tensor((3, 4), dtype, device, lay).requires_grad_(requires_grad) for lay in layouts)
    yield Sample(t, {"value": 2}, "transposed/sliced/offset value=2")


def addcdiv_samples(dtype, device, requires_grad=False):
    """addcmul's cases with the divisor kept away from zero (|tensor2| >= 0.5), in the same layouts."""
    previous = None  # addcmul_samples yields each operand tuple twice in a row (two values)
    for sample in addcmul_samples(dtype, device):
        t2 = sample.args[2]
        if t2 is not previous:
            previous = t2
            t2.copy_(torch.where(t2 < 0, t2 - 0.5, t2 + 0.5))  # copy_ keeps the layout
        for t in sample.args:
            t.requires_grad_(requires_grad)
        yield sample


def _addcdiv_saved(sample, requiring):
    saved = set()
    if requiring & {"tensor1", "tensor2"}:
        saved.add("tensor2")
    if "tensor2" in requiring:
        saved.add("tensor1")
    return frozenset(saved)


def lerp_samples(dtype, device, requires_grad=False):
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


def accumulate_ref(tensors, weights=None):
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


def _is_exact_add(sample: Sample, dtype) -> bool:
    # Bit for bit with torch.add/sub in every floating dtype (csrc/add.cpp: alpha != 1 where torch's bits
    # depend on its loops is torch's kernel).
    return True


@dataclass
class ErrorInput:
    """A mistake: calling the op (or its in-place variant) with these arguments raises `error`, like torch's
    `torch_call` (None where torch has no such op), and changes no input."""

    desc: str
    variant: str  # "op" or "inplace"
    args: tuple
    error: type
    torch_call: Optional[Callable] = None
    kwargs: dict = field(default_factory=dict)


@dataclass
class OpInfo:
    name: str  # the declared op: safe_ops.<name>, safe_ops.<name>_, torch.ops.safe_ops.<name>
    ref: Callable
    samples: Callable
    exact: Callable[[Sample, torch.dtype], bool]
    # names of the tensor arguments in sample order, and which of them the op saves for a given set of
    # arguments requiring grad (a function of the sample and the frozenset of requiring names).
    arg_names: Callable[[Sample], List[str]]
    expected_saved: Callable[[Sample, frozenset], frozenset]
    # The in-place update of target t with operand o: (args, kwargs) of safe_ops.<name>_ and of the out-of-place
    # reference (`ref`), which must give the same values and gradients.
    update: Callable[[torch.Tensor, torch.Tensor], Tuple[tuple, dict]]
    # The op's mistakes, each with the error torch raises for the same mistake.
    error_inputs: Callable[[], List[ErrorInput]]
    # One benchmark call on equal-shape operands a, b, c: (args, kwargs) of the functional op, the torch
    # function doing the same work (None: no torch twin), and the tensors it reads + writes (memory streams).
    bench: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Tuple[tuple, dict]]
    torch_twin: Optional[Callable] = None
    streams: int = 3  # forward: operands read + result written
    backward_streams: int = 2  # backward: g read + gradients written that are not g itself

    def bench_inplace(self, out: torch.Tensor, a, b, c) -> Tuple[tuple, dict]:
        """The in-place variant's benchmark call writing into `out`: out replaces the first operand, or leads
        (an op whose in-place form takes a separate target, like accumulate_(out, tensors))."""
        args, kwargs = self.bench(a, b, c)
        return ((out,) + args if DECLARED[self.name].inplace_target else (out,) + args[1:]), kwargs

    def bench_inplace_streams(self) -> int:
        return self.streams + (1 if DECLARED[self.name].inplace_target else 0)

    @property
    def op(self) -> Callable:
        return getattr(safe_ops, self.name)

    @property
    def inplace(self) -> Callable:
        return getattr(safe_ops, self.name + "_")

    @property
    def overloads(self) -> list:
        """Every torch.ops overload of the functional op (the samples must exercise all of them)."""
        packet = getattr(torch.ops.safe_ops, self.name)
        return [getattr(packet, ov.name or "default") for ov in DECLARED[self.name].overloads]

    def overload_for(self, sample: Sample):
        return safe_ops._wrappers.overload_for(self.name, *sample.args, **sample.kwargs)

    def torch_inplace(self) -> Optional[str]:
        """Name of torch's own in-place method doing the same update (Tensor.<name>_), if it has one."""
        return f"{self.name}_" if hasattr(torch.Tensor, f"{self.name}_") else None


DECLARED = {op.name: op for op in OPS}


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


_a34, _b5 = torch.randn(3, 4), torch.randn(5)
_ints = torch.arange(4)


def _binary_errors(name: str, torch_op: Callable) -> Callable[[], List[ErrorInput]]:
    return lambda: [
        ErrorInput(f"{name} shapes don't broadcast", "op", (_a34, _b5), RuntimeError, lambda: torch_op(_a34, _b5)),
        ErrorInput(f"{name}_ shapes don't broadcast", "inplace", (_a34, _b5), RuntimeError,
                   lambda: torch_op(_a34, _b5)),
        # Integer, bool and complex operands are torch's op's (csrc/twin.h), its errors too.
        ErrorInput(f"{name} integer tensors, float alpha", "op", (_ints, _ints), RuntimeError,
                   lambda: torch_op(_ints, _ints, alpha=0.5), {"alpha": 0.5}),
        ErrorInput(f"{name} bool alpha, float result", "op", (_b5, _b5), RuntimeError,
                   lambda: torch_op(_b5, _b5, alpha=True), {"alpha": True}),
        ErrorInput(f"{name} complex alpha, real result", "op", (_b5, _b5), RuntimeError,
                   lambda: torch_op(_b5, _b5, alpha=1j), {"alpha": 1j}),
        ErrorInput(f"{name}_ float result into an integer tensor", "inplace", (_ints.clone(), _b5[:4]), RuntimeError,
                   lambda: _ints.clone().add_(_b5[:4])),
    ]


def _ternary_errors(name: str, torch_op: Callable) -> Callable[[], List[ErrorInput]]:
    return lambda: [
        ErrorInput(f"{name} shapes", "op", (_a34, _a34, _b5), RuntimeError, lambda: torch_op(_a34, _a34, _b5)),
        ErrorInput(f"{name}_ shapes", "inplace", (_a34, _a34, _b5), RuntimeError, lambda: torch_op(_a34, _a34, _b5)),
    ]


def _accumulate_errors() -> List[ErrorInput]:
    return [
        ErrorInput("accumulate shapes", "op", ([_a34, _b5],), RuntimeError, lambda: _a34 + _b5),
        ErrorInput("accumulate_ shapes", "inplace", (_a34, [_a34.clone(), _b5]), RuntimeError, lambda: _a34 + _b5),
        ErrorInput("accumulate empty list", "op", ([],), RuntimeError, lambda: torch.stack([])),
        ErrorInput("accumulate_ empty list", "inplace", (_a34, []), RuntimeError, lambda: torch.stack([])),
        ErrorInput("accumulate len(weights) != K", "op", ([_b5, _b5], [1.0]), RuntimeError,
                   lambda: torch._foreach_mul([_b5, _b5], [1.0])),
        ErrorInput("accumulate_ len(weights) != K", "inplace", (_b5, [_b5.clone()], [1.0, 2.0]), RuntimeError,
                   lambda: torch._foreach_mul([_b5], [1.0, 2.0])),
        ErrorInput("accumulate weights tensor wrong length", "op", ([_b5, _b5], torch.ones(3)), RuntimeError),
        ErrorInput("integer accumulate_", "inplace", (_ints, [_ints]), TypeError),
    ]


def _lerp_errors() -> List[ErrorInput]:
    return [
        ErrorInput("lerp shapes", "op", (_a34, _b5, 0.5), RuntimeError, lambda: torch.lerp(_a34, _b5, 0.5)),
        ErrorInput("lerp_ shapes", "inplace", (_a34, _b5, 0.5), RuntimeError, lambda: torch.lerp(_a34, _b5, 0.5)),
        ErrorInput("lerp dtype mismatch", "op", (_a34, _a34.double(), 0.5), RuntimeError,
                   lambda: torch.lerp(_a34, _a34.double(), 0.5)),
        ErrorInput("integer lerp", "op", (_ints, _ints, 0.5), RuntimeError, lambda: torch.lerp(_ints, _ints, 0.5)),
        ErrorInput("lerp_ dtype mismatch", "inplace", (_a34.clone(), _a34.double(), 0.5), RuntimeError,
                   lambda: _a34.clone().lerp_(_a34.double(), 0.5)),
    ]


OP_TABLE = [
    OpInfo("add", torch.add, add_samples, _is_exact_add, _binary_names, lambda s, r: frozenset(),
           update=lambda t, o: ((t, o), {"alpha": 2}), error_inputs=_binary_errors("add", torch.add),
           bench=lambda a, b, c: ((a, b), {"alpha": 2}), torch_twin=torch.add),
    OpInfo("sub", torch.sub, add_samples, _is_exact_add, _binary_names, lambda s, r: frozenset(),
           update=lambda t, o: ((t, o), {}), error_inputs=_binary_errors("sub", torch.sub),
           bench=lambda a, b, c: ((a, b), {"alpha": 2}), torch_twin=torch.sub),
    OpInfo("accumulate", accumulate_ref, accumulate_samples, lambda s, d: d in (torch.float32, torch.float64),
           _accumulate_names, _accumulate_saved,
           update=lambda t, o: ((t, [o, o], [0.5, -1.5]), {}), error_inputs=_accumulate_errors,
           bench=lambda a, b, c: (([a, b, c], [1.0, 2.0, 3.0]), {}), streams=4, backward_streams=4),
    # Bit for bit with torch: the same fused multiply-adds as torch's kernels for this CPU (csrc/cpu/isa_loops.h).
    OpInfo("addcmul", torch.addcmul, addcmul_samples, lambda s, d: True,
           lambda s: ["input", "tensor1", "tensor2"], _addcmul_saved,
           update=lambda t, o: ((t, o, o), {"value": 0.5}), error_inputs=_ternary_errors("addcmul", torch.addcmul),
           bench=lambda a, b, c: ((a, b, c), {"value": 0.5}), torch_twin=torch.addcmul, streams=4,
           backward_streams=5),
    OpInfo("addcdiv", torch.addcdiv, addcdiv_samples, lambda s, d: True,
           lambda s: ["input", "tensor1", "tensor2"], _addcdiv_saved,
           update=lambda t, o: ((t, o, o.abs() + 0.5), {"value": 0.5}),
           error_inputs=_ternary_errors("addcdiv", torch.addcdiv),
           bench=lambda a, b, c: ((a, b, c.abs() + 0.5), {"value": 0.5}), torch_twin=torch.addcdiv, streams=4,
           backward_streams=5),
    OpInfo("lerp", torch.lerp, lerp_samples, lambda s, d: True, _lerp_names, _lerp_saved,
           update=lambda t, o: ((t, o, 0.25), {}), error_inputs=_lerp_errors,
           bench=lambda a, b, c: ((a, b, 0.1), {}), torch_twin=torch.lerp, backward_streams=3),
]


def reference_update(info: OpInfo, args: tuple, kwargs: dict):
    """The out-of-place reference of safe_ops.<name>_(*args): the functional reference with the target as
    its first operand (accumulate: the target joins the list with weight 1)."""
    if info.name == "accumulate":
        out, tensors, *rest = args
        weights = rest[0] if rest else None
        return info.ref([out] + list(tensors), None if weights is None else [1.0] + list(weights))
    return info.ref(*args, **kwargs)


def inplace_variants():
    """{name_: (safe update(t, o), reference update(t, o))} for every op: the in-place hazard tables."""
    variants = {}
    for info in OP_TABLE:
        def safe(t, o, info=info):
            args, kwargs = info.update(t, o)
            return info.inplace(*args, **kwargs)

        def reference(t, o, info=info):
            args, kwargs = info.update(t, o)
            return reference_update(info, args, kwargs)

        variants[f"{info.name}_"] = (safe, reference)
    return variants


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
