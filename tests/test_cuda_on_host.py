"""The CUDA kernels executed on the host: their host code and per-thread bodies (csrc/cuda/) run over every
position of the grid a launch would use, on CPU tensors, with every load and store checked for bounds and
16-byte alignment (csrc/cuda_on_host/), against the CPU kernels and torch. ``pytest -m cuda_on_host``."""
import contextlib

import pytest
import torch

import safe_ops

from op_table import FLOAT_DTYPES, FOREACH_TABLE, OP_TABLE, op_ids, ops_with, replace_tensors

pytestmark = pytest.mark.cuda_on_host
SIM = torch.ops.safe_ops_cuda_on_host
H100_BLOCKS = 132 * 8  # resident 256-thread blocks: the grid-stride loops' grid on an H100
ULP = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23, torch.float64: 2.0**-52}


@contextlib.contextmanager
def cuda_on_host(resident_blocks=H100_BLOCKS):
    """safe_ops' CPU kernels replaced by the simulated CUDA kernels while inside."""
    SIM.enable(True, resident_blocks)
    try:
        yield
    finally:
        SIM.enable(False, 0)


def counts():
    return dict(zip(["loads", "vector_loads", "stores", "vector_stores", "launches", "blocks"], SIM.counts()))


def assert_close(got, want, dtype, ulps=2):
    # Index or bounds mistakes give other elements' values; the formulas may differ from the CPU's in the last
    # bit (nvcc and the CPU loops contract a*b + c to fma differently), so a few ulps of the dtype.
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=ulps * ULP[dtype], atol=ulps * ULP[dtype], equal_nan=True)


def run_sample(info, sample, grad):
    xs = replace_tensors(sample, lambda t: t.detach().clone().requires_grad_(grad) if t.is_floating_point() else t)
    out = info.op(*xs.args, **xs.kwargs)
    if not grad:
        return [out]
    g = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape).to(out.dtype)
    leaves = [t for t in xs.tensors() if t.requires_grad]
    grads = torch.autograd.grad(out, leaves, g, allow_unused=True)
    return [out] + [x for x in grads if x is not None]


@pytest.mark.parametrize("resident_blocks", [3, H100_BLOCKS])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_op_table_forward_and_backward(info, dtype, resident_blocks):
    """Every op's samples (broadcast, expanded, transposed, sliced, offset by one element, 0-dim, empty, K > 8)
    forward and backward: the simulated CUDA kernels against the CPU kernels."""
    torch.manual_seed(0)
    n = 0
    for sample in info.samples(dtype, "cpu"):
        grad = not sample.large
        want = run_sample(info, sample, grad)
        with cuda_on_host(resident_blocks):
            got = run_sample(info, sample, grad)
        for w, g in zip(want, got):
            assert_close(g, w, dtype, ulps=4 if dtype == torch.float64 else 2)
        n += 1
    assert n > 5


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 255, 2047, 2048, 2049, 40961])
@pytest.mark.parametrize("offset", [0, 1])
def test_contiguous_vector_widths_tails_and_alignment(dtype, n, offset):
    """Each dtype's vector width (16 bytes: 8, 8, 4, 2 elements), tails of every length, aligned and unaligned
    operands: the vector path runs exactly when every pointer is 16-byte aligned."""
    torch.manual_seed(n)
    buf = [torch.randn(n + 1, dtype=torch.float64).to(dtype) for _ in range(3)]
    a, b, c = (x[offset:offset + n] for x in buf)
    c = c.abs() + 0.5
    calls = [(info.op, *info.bench(a, b, c)) for info in OP_TABLE]  # every op of the table, its benchmark call
    want = [op(*args, **kwargs) for op, args, kwargs in calls]
    with cuda_on_host(3):
        got = [op(*args, **kwargs) for op, args, kwargs in calls]
        seen = counts()
    for g, w in zip(got, want):
        assert_close(g, w, dtype)
    vec = 16 // a.element_size()
    if offset == 0 and n >= vec:
        assert seen["vector_loads"] > 0 and seen["vector_stores"] > 0
    if offset == 1:
        assert seen["vector_loads"] == 0 and seen["vector_stores"] == 0  # an unaligned operand: no vector access


@pytest.mark.parametrize("fault", ["overrun", "misaligned"])
def test_checked_memory_reports_bad_accesses(fault):
    """The checks can fail: the contiguous body over one element more than its buffer, and with vector accesses
    on a pointer one element past 16-byte alignment."""
    message = {"overrun": "out-of-bounds", "misaligned": "misaligned 16-byte load"}[fault]
    with pytest.raises(RuntimeError, match=f"cuda_on_host: {message}"):
        SIM.self_test(fault)


# ---- torch's CUDA formulas (issue items 1 and 2) -------------------------------------------------------------

@pytest.mark.parametrize("value", [1.0, -1.0, 2.0, 0.3, -1e-3, 0.001])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("info", ops_with("cuda_value_reference"), ids=lambda i: i.name)
def test_value_ops_have_torch_cuda_bits(info, dtype, value):
    """Plain and foreach `input + value * f(tensor1, tensor2)` ops on the simulated CUDA kernels give torch's CUDA
    bits (pointwise_op_impl: fma with the value == 1 case), which the CPU order does not for value != ±1, 2^k.
    The reference is the row's cuda_value_reference in opmath (float32 for half/bfloat16), rounded to the dtype,
    emulated with torch's own ops: products of two float32 values are exact in float64 and the seeded inputs keep
    the float64 sum from landing on a float32 rounding tie, so rounding the float64 result to float32 is the
    fma's one rounding."""
    torch.manual_seed(1)
    s, t1 = (torch.randn(4099, dtype=torch.float64).to(dtype) for _ in range(2))
    t2 = (torch.rand(4099, dtype=torch.float64) + 0.5).to(dtype)
    f = torch.float32
    want = info.cuda_value_reference(s.to(f), t1.to(f), t2.to(f), value, torch.tensor(value, dtype=f).double())
    want = want.to(f).to(dtype)
    foreach = next(i for i in FOREACH_TABLE if i.declared.base == info.name)
    with cuda_on_host():
        plain = info.op(s, t1, t2, value=value)
        members = [s[:1000].clone(), s[1000:].clone()]
        foreach.call(members, [[t1[:1000], t1[1000:]], [t2[:1000], t2[1000:]]], value)
    assert torch.equal(plain, want)
    assert torch.equal(torch.cat(members), want)
    if value not in (1.0, -1.0, 2.0) and dtype == torch.float32:
        # the CPU order's bits differ (in float16/bfloat16 only where a float32 ulp moves the final rounding:
        # a few elements per ten thousand)
        assert not torch.equal(info.op(s, t1, t2, value=value), want)


def _number(x, dtype):
    return float(torch.tensor(x, dtype=dtype))  # the number as torch's CUDA kernels read it: rounded to dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("info", ops_with("host_half_grads"), ids=lambda i: i.name)
def test_half_gradients_with_a_number_have_torch_cuda_bits(info, dtype):
    """grad * number on CUDA uses the number rounded to the dtype (the CPU: unrounded): every row's gradients
    with a number (host_half_grads), against torch on the CPU with the number already rounded, which computes
    what torch's CUDA kernels do with the number."""
    torch.manual_seed(2)
    s, t1, g = (torch.randn(999, dtype=torch.float64).to(dtype) for _ in range(3))
    t2 = (torch.rand(999, dtype=torch.float64) + 0.5).to(dtype)
    grads, want = info.host_half_grads(s, t1, t2, g, lambda x: _number(x, dtype))
    with cuda_on_host():
        got = grads()
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"{info.name} gradient {i}"
    cpu = grads()
    assert any(not torch.equal(a, b) for a, b in zip(cpu, want)), f"{info.name}: the CPU bits differ"


# ---- foreach: the multi-tensor-apply packing and chunk walker ------------------------------------------------

def _members(dtype, sizes, offset):
    out = []
    for i, n in enumerate(sizes):
        if n is None:
            out.append(torch.randn((), dtype=torch.float64).to(dtype))  # 0-dim
            continue
        o = offset * (i % 2)  # every other member one element past 16-byte alignment
        out.append(torch.randn(n + o, dtype=torch.float64).to(dtype)[o:])
    return out


FOREACH_CASES = {
    # more members than one launch's metadata holds (48 / 36 / 28 slots), with empty and 0-dim ones
    "many": [0, None, 1, 7, 9, 15, 17, 31, 33] * 12,
    # members of several chunks (65536 elements), so a launch's 320 blocks end inside a member
    "chunks": [65536 * 3 + 5, 65536 * 100 - 1, 65536 * 240 + 3, 9],
}


MEMBER_DTYPES = [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
                 (torch.float64, torch.float64), (torch.float32, torch.bfloat16)]
# (the multi-chunk case once: 21M simulated elements)
FOREACH_PARAMS = [("many", d, o) for d in MEMBER_DTYPES for o in (0, 1)] + [("chunks", MEMBER_DTYPES[0], 0)]


@pytest.mark.parametrize("case,dtypes,offset", FOREACH_PARAMS, ids=str)
def test_foreach_kernel(case, dtypes, offset):
    """The fused foreach kernels called directly on members of every kind: against the per-tensor op on the
    CPU, with numbers from a list and from a tensor (read by the kernel)."""
    dtype, operand_dtype = dtypes
    torch.manual_seed(len(FOREACH_CASES[case]))
    members = _members(dtype, FOREACH_CASES[case], offset)
    for info in FOREACH_TABLE:
        if case == "chunks" and info.skip_reason("cuda_on_host.foreach_chunks"):
            continue
        nlists = len(info.declared.lists)
        operands = [(torch.rand(m.shape, dtype=torch.float64) + 0.5).to(operand_dtype)
                    for m in members for _ in range(nlists)]
        values = [0.25 + 0.5 * (i % 2) for i in range(len(members))]  # both forms of an interpolation
        want = []
        for i, m in enumerate(members):
            ops = [o.to(dtype) if operand_dtype == dtype else o.double()
                   for o in operands[i * nlists:(i + 1) * nlists]]
            ref_in = m if operand_dtype == dtype else m.double()
            want.append(info.member_call(ref_in, ops, values[i], fn=info.base).to(dtype))
        fused = info.fused
        for numbers in ("list", "tensor"):
            got = [m.clone() for m in members]
            with cuda_on_host():
                if numbers == "list":
                    fused(got, operands, values, None)
                else:
                    fused(got, operands, [], torch.tensor(values))
                seen = counts()
            for i, (g, w) in enumerate(zip(got, want)):
                assert_close(g, w, dtype, ulps=2 if operand_dtype == dtype else 8), f"{info.name}_ member {i}"
            if case == "chunks":
                assert seen["launches"] >= 2 and seen["blocks"] == sum(-(-n // 65536) for n in FOREACH_CASES[case])


# ---- the reduction (dot_many: accumulate's weight gradients) -------------------------------------------------

@pytest.mark.parametrize("resident_blocks", [1, 5, H100_BLOCKS])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_weight_gradients_reduction(dtype, resident_blocks):
    """accumulate's weights-tensor gradient (dot_many: per-thread sums, block reduction, block partials summed in
    order) for K > 8 (two groups), contiguous and strided operands, against the CPU kernels."""
    torch.manual_seed(3)
    base = [torch.randn(3, 7001, dtype=torch.float64).to(dtype) for _ in range(11)]
    for xs in ([b[1] for b in base], [b[:, ::3] for b in base]):
        g = torch.randn(xs[0].shape, dtype=torch.float64).to(dtype)
        w = torch.linspace(-1, 1, len(xs), dtype=dtype)

        def weight_grad():
            wl = w.clone().requires_grad_()
            return torch.autograd.grad(safe_ops.accumulate(xs, wl), wl, g)[0]

        want = weight_grad()
        with cuda_on_host(resident_blocks):
            got = weight_grad()
            again = weight_grad()
        assert torch.equal(got, again)
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-3 if dtype.itemsize == 2 else 1e-6, atol=1e-3)


# ---- offsets past 2^31 (virtual buffers, some blocks only) ---------------------------------------------------

BIG = (1 << 31) + 17


def _expected_add(idx):
    return (idx % 7).double() + 0.5 * ((idx % 5) + 1).double()  # a[i] = i % 7, b[i] = i % 5 + 1


@pytest.mark.parametrize("dtype,offset", [(torch.float16, 0), (torch.float16, 1), (torch.float32, 0),
                                          (torch.float64, 0)], ids=str)
def test_contiguous_kernel_past_2_31(dtype, offset):
    """add(a, b, alpha=0.5) over 2^31 + 17 elements, H100 grid, 64-bit indexing: the blocks around element 2^31
    and the first and last ones; every store past 2^31 - 4096 must be in bounds (checked) and right."""
    vec = 16 // torch.tensor([], dtype=dtype).element_size() if offset == 0 else 1
    per_step = H100_BLOCKS * 256 * vec  # elements one grid step covers
    block_of = lambda i: (i % per_step) // (256 * vec)  # the block that writes element i (the kernel's order)
    blocks = sorted({0, block_of((1 << 31) - 1), block_of(1 << 31), H100_BLOCKS - 1, block_of(BIG - 1)})
    idx, val = SIM.big_elementwise(BIG, dtype, offset, H100_BLOCKS, blocks, (1 << 31) - 4096)
    assert idx.unique().numel() == idx.numel()
    assert {(1 << 31) - 1, 1 << 31, BIG - 1} <= set(idx.tolist())
    assert torch.equal(val, _expected_add(idx))


def test_foreach_kernel_past_2_31():
    """foreach_add_ on one member of 2^31 + 17 elements (launches of 320 chunks; the member continues from
    launch to launch): the chunks reaching past 2^31 - 65536 are simulated and checked."""
    idx, val = SIM.big_foreach(BIG, torch.float16, (1 << 31) - 65536)
    assert idx.numel() == BIG - ((1 << 31) - 65536) and idx.unique().numel() == idx.numel()
    assert idx.min().item() == (1 << 31) - 65536 and idx.max().item() == BIG - 1
    assert torch.equal(val, _expected_add(idx))
