"""The op database's types and helpers (PyTorch's OpInfo, small): an OpInfo per declared op
(safe_ops/_declarations.py), a ForeachInfo per declared foreach op, the samples and checks they carry. The rows
live one op per module of this package; ``op_table/__init__.py`` collects them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import safe_ops
import safe_ops._wrappers
from safe_ops._declarations import FOREACH_OPS, OPS
from safe_ops._twin import KERNEL_DTYPES as _KERNEL_DTYPES

# The dtypes the hand-written kernels compute (safe_ops._twin.KERNEL_DTYPES), in a stable order.
FLOAT_DTYPES = tuple(sorted(_KERNEL_DTYPES, key=lambda d: (torch.finfo(d).bits, d == torch.bfloat16)))
DECLARED = {op.name: op for op in OPS}
DECLARED_FOREACH = {f.name: f for f in FOREACH_OPS}


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


@dataclass(frozen=True)
class Check:
    """An op-specific test kept in the op's row (a behaviour only this op has): the test file of `group` runs
    `fn()` as its own test, `<op>-<id>`. PyTorch keeps such cases in its test files; here the row holds them so
    that no test file names an op."""

    group: str  # the test file that runs it: "bitwise", "transforms", "twin", "out", "cuda", "cuda_on_host"
    id: str
    fn: Callable[[], None]


@dataclass(frozen=True)
class BitwiseCase:
    """call(m, a, b, c, w) with m = torch or safe_ops: the same bits from both (tests/test_bitwise.py). `half`:
    also bitwise in float16/bfloat16."""

    id: str
    call: Callable
    half: bool = False


@dataclass(frozen=True)
class FuzzInfo:
    """How tests/test_fuzz.py draws the op's calls: the tensor operands after the first (the in-place target),
    whether they may be Python numbers, the keyword of its number (alpha/value) or a trailing weight that is a
    number or a tensor, and where torch's zero signs are not a contract (`zero_sign_is_free(args)`)."""

    operands: Tuple[str, ...]
    number_operands: bool = False
    scalar_kw: Optional[str] = None
    weight: bool = False
    zero_sign_is_free: Callable[[list], bool] = lambda args: False


@dataclass(frozen=True)
class DTensorCase:
    """One DTensor check of the functional op (tests/distributed/_worker.py): ours(a, b, c, w) and ref(a, b, c, w)
    on the first `n` operands (the rest None); w(a) is the weights tensor matching a (a Replicate DTensor for
    DTensors). `weight_grad`: (ours(xs), ref(xs), the weight's full value (fulls, weights), leaves) for the
    check where the weights need a gradient too."""

    id: str
    ours: Callable
    ref: Callable
    n: int
    weight_grad: Optional[Tuple[Callable, Callable, Callable, int]] = None


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
    # The out-of-place reference of safe_ops.<name>_(*args, **kwargs) (default: `ref` with the target as its
    # first operand).
    ref_inplace: Optional[Callable] = None
    # torch's in-place ops doing safe_ops.<name>_(*args, **kwargs)'s update in place, where torch has no
    # Tensor.<name>_ (None: Tensor.<name>_).
    torch_inplace_update: Optional[Callable] = None
    # Errors beyond torch's op_db error_inputs for this op (tests/test_opinfo.py): err(input, *args, **kwargs)
    # builds one from the inputs that must make torch's op raise; t(*shape, dtype=) makes a tensor.
    opinfo_error_inputs: Callable[[Callable, Callable], list] = lambda t, err: []
    bitwise: Tuple[BitwiseCase, ...] = ()
    # safe_ops.<name>_ bitwise with torch's Tensor.<name>_: (args, kwargs) after the target, from operands b, c.
    bitwise_inplace: Optional[Callable[[torch.Tensor, torch.Tensor], Tuple[tuple, dict]]] = None
    # In-place calls beyond the caches (the prefetching loops): (dtype, generator, n) -> [(got, expected)].
    prefetch: Optional[Callable] = None
    # Gradients with torch's bits: (id, call(m, a, b, c, k), number of leaves among a, b, c).
    grad_bitwise: Tuple[Tuple[str, Callable, int], ...] = ()
    fuzz: Optional[FuzzInfo] = None
    # out= like torch's: out_args(a, b, c) -> (args, kwargs) of a call whose result is (3, 4) float32, from
    # a (3, 4), b (4,) and c (3, 4) positive (None: no out= tests).
    out_args: Optional[Callable] = None
    # Calls torch's op of the same schema computes (integer, bool, complex): twin_cases(dtype, t, number, pos)
    # -> [(args, kwargs)], with t(*shape) a tensor of dtype, `number` a number of its kind and `pos` a tensor
    # of nonzero values (None for bool); complex_grad_cases(C) -> [(id, args, kwargs)] in complex dtype C.
    twin_cases: Callable = lambda dtype, t, number, pos: []
    complex_grad_cases: Callable = lambda C: []
    # The op's backward ops under vmap: (id, op, args, in_dims[, out_dims]) with a batch of size B.
    backward_vmap_cases: Callable[[int], list] = lambda B: []
    dtensor: Tuple[DTensorCase, ...] = ()
    # The in-place variant on DTensors: (ours(a, b), ref(a, b)) writing a; `dtensor_partial_inplace` where the
    # Partial-placement check needs another call (None: the same).
    dtensor_inplace: Optional[Tuple[Callable, Callable]] = None
    dtensor_partial_inplace: Optional[Tuple[Callable, Callable]] = None
    # torch's CUDA formula for an `input + value * f(tensor1, tensor2)` op, emulated on the host:
    # cuda_value_reference(s32, a, b, value, v) in float32 operands (v: value in float32, as a float64 tensor)
    # -> the float64 result before its one rounding.
    cuda_value_reference: Optional[Callable] = None
    # (id, call(m, s, x, y), which inputs of (s, t1, t2) are x, y): half gradients with a number on CUDA.
    cuda_half_grads: Tuple[Tuple[str, Callable, Tuple[int, int]], ...] = ()
    # The same on the simulated CUDA kernels (tests/test_cuda_on_host.py): host_half_grads(s, t1, t2, g, rounded)
    # -> (grads(), torch's gradients with the numbers rounded(x) to the dtype, as torch's CUDA kernels read them).
    host_half_grads: Optional[Callable] = None
    checks: Tuple[Check, ...] = ()
    skips: Tuple[Tuple[str, str], ...] = ()  # (test name, reason): the tests that do not apply to this op

    def bench_inplace(self, out: torch.Tensor, a, b, c) -> Tuple[tuple, dict]:
        """The in-place variant's benchmark call writing into `out`: out replaces the first operand, or leads
        (an op whose in-place form takes a separate target)."""
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
    def declared(self):
        return DECLARED[self.name]

    @property
    def separate_target(self) -> bool:
        """The in-place form takes its own target before the functional op's arguments."""
        return bool(DECLARED[self.name].inplace_target)

    @property
    def mirrors_torch(self) -> bool:
        """torch has an op of this name and schema (its op_db entry is our parity reference)."""
        return DECLARED[self.name].twin

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

    def skip_reason(self, test: str) -> Optional[str]:
        return dict(self.skips).get(test)


@dataclass
class ForeachInfo:
    """A row per declared foreach op (safe_ops.foreach_<base>_): torch's foreach reference and the per-op facts
    the foreach tests need."""

    name: str  # the declared ForeachOp's name: foreach_<base>
    # torch._foreach_<base>_(ts, *xs, number) as ts, xs, number -> None (the reference for every member).
    torch_ref: Callable[[list, list, object], object]
    # Operand lists whose members must stay away from zero (divisors), by index in the declaration's `lists`.
    positive_lists: Tuple[int, ...] = ()
    # With the number 1 the result is exact in both safe_ops and torch (a + 1·b): bitwise against torch.
    exact_at_one: bool = False
    # Bad calls: (id, call(a), error, torch_call(a) or None), a a fresh list of two members (test_foreach_bad_input).
    bad_inputs: Tuple[Tuple[str, Callable, type, Optional[Callable]], ...] = ()
    # The number of the DTensor checks (tests/distributed/_worker.py).
    dtensor_number: float = 2.0
    # A number at which the fused kernel must stay fused on CUDA in float16/bfloat16, with torch's bits.
    cuda_half_number: Optional[float] = None
    skips: Tuple[Tuple[str, str], ...] = ()

    @property
    def declared(self):
        return DECLARED_FOREACH[self.name]

    @property
    def inplace(self) -> Callable:
        return getattr(safe_ops, self.name + "_")

    @property
    def base_inplace(self) -> Callable:
        return getattr(safe_ops, self.declared.base + "_")

    @property
    def base(self) -> Callable:
        return getattr(safe_ops, self.declared.base)

    @property
    def fused(self):
        return getattr(torch.ops.safe_ops, f"{self.name}_inplace").default

    def number_call(self, number) -> Tuple[tuple, dict]:
        """(positional, keyword) arguments passing the per-member number as the declaration takes it."""
        d = self.declared
        return ((), {d.number_keyword: number}) if d.number_keyword else ((number,), {})

    def call(self, ts, lists, number):
        """safe_ops.foreach_<base>_(ts, *lists, number)."""
        pos, kw = self.number_call(number)
        return self.inplace(ts, *lists, *pos, **kw)

    def member_call(self, t, operands, number, fn=None):
        """The per-tensor op (default safe_ops.<base>_) on one member."""
        pos, kw = self.number_call(number)
        return (fn or self.base_inplace)(t, *operands, *pos, **kw)

    def operand_lists(self, make: Callable[[], list]) -> List[list]:
        """One list per declared operand list, from make(); positive_lists kept away from zero (|x| + 0.5)."""
        lists = [make() for _ in self.declared.lists]
        for i in self.positive_lists:
            lists[i] = [x.abs() + 0.5 for x in lists[i]]
        return lists

    def skip_reason(self, test: str) -> Optional[str]:
        return dict(self.skips).get(test)


def sorted_by_declaration(infos: Sequence, order: Sequence[str]) -> list:
    rank: Dict[str, int] = {name: i for i, name in enumerate(order)}
    return sorted(infos, key=lambda info: rank.get(info.name, len(rank)))


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
