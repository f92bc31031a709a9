"""CUDA-only checks (they run wherever a GPU is visible; parity over the op table on CUDA is in test_ops.py)."""
import pytest
import torch

import safe_ops

from op_table import FLOAT_DTYPES, FOREACH_TABLE, OP_TABLE, check_gradients, op_checks, op_ids, ops_with

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("info", OP_TABLE, ids=op_ids())
def test_cuda_gradcheck(info):
    assert check_gradients(info, "cuda", gradgrad=False) > 3


@pytest.mark.parametrize("check", op_checks("cuda"))
def test_cuda_op_specific(check):
    check()


ADAM_VALUES = [1.0, -1.0, 2.0, 0.3, -1e-3, 0.001, 1 - 0.999]


VALUE_OPS = ops_with("cuda_value_reference")  # input + value * f(tensor1, tensor2), torch's CUDA order
FOREACH_OF = {info.declared.base: info for info in FOREACH_TABLE}


@pytest.mark.parametrize("value", ADAM_VALUES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("info", VALUE_OPS, ids=lambda i: i.name)
def test_cuda_value_ops_bits_match_torch(info, dtype, value):
    """torch's CUDA order (fma, with value == 1 apart), plain, in place and foreach, bit for bit."""
    torch.manual_seed(0)
    s, t1 = (torch.randn(10007, device="cuda", dtype=dtype) for _ in range(2))
    t2 = torch.rand(10007, device="cuda", dtype=dtype) + 0.5
    want = info.torch_twin(s, t1, t2, value=value)
    assert torch.equal(info.op(s, t1, t2, value=value), want)
    foreach = FOREACH_OF[info.name]
    members = [s[:5000].clone(), s[5000:].clone()]
    foreach.call(members, [[t1[:5000], t1[5000:]], [t2[:5000], t2[5000:]]], value)
    torch_members = [s[:5000].clone(), s[5000:].clone()]
    foreach.torch_ref(torch_members, [[t1[:5000], t1[5000:]], [t2[:5000], t2[5000:]]], value)
    assert all(torch.equal(a, b) for a, b in zip(members, torch_members))
    assert torch.equal(torch.cat(members), want)


HALF_GRAD_CASES = [pytest.param(call, inputs, id=f"{info.name}-{case_id}") for info in OP_TABLE
                   for case_id, call, inputs in info.cuda_half_grads]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("call, inputs", HALF_GRAD_CASES)
def test_cuda_half_gradients_with_a_number_match_torch(call, inputs, dtype):
    """grad * number with the number rounded to the dtype, as torch's CUDA kernels read it."""
    torch.manual_seed(1)
    s, t1, g = (torch.randn(4099, device="cuda", dtype=dtype) for _ in range(3))
    t2 = torch.rand(4099, device="cuda", dtype=dtype) + 0.5
    chosen = [(s, t1, t2)[i] for i in inputs]
    ours = [x.clone().requires_grad_() for x in chosen]
    theirs = [x.clone().requires_grad_() for x in chosen]
    got = torch.autograd.grad(call(safe_ops, s, *ours), ours, g)
    want = torch.autograd.grad(call(torch, s, *theirs), theirs, g)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("info", [i for i in FOREACH_TABLE if i.cuda_half_number is not None],
                         ids=lambda i: i.name + "_")
def test_cuda_foreach_half_number_matches_torch(info, dtype):
    """The numbers at which the fused kernel must stay fused on CUDA in half precision (the row's
    cuda_half_number: a binary op's alpha != 1, an interpolation weight of 1), with torch's bits."""
    torch.manual_seed(2)
    xs = [torch.randn(n, device="cuda", dtype=dtype) for n in (1, 31, 4097)]
    lists = info.operand_lists(lambda: [torch.randn_like(x) for x in xs])
    ours, theirs = [x.clone() for x in xs], [x.clone() for x in xs]
    info.call(ours, lists, info.cuda_half_number)
    info.torch_ref(theirs, lists, info.cuda_half_number)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("info", FOREACH_TABLE, ids=lambda i: i.name + "_")
def test_cuda_foreach_takes_a_cpu_number_tensor(info):
    xs = [torch.randn(n, device="cuda") for n in (3, 1000)]
    lists = info.operand_lists(lambda: [torch.randn_like(x) for x in xs])
    want = [x.clone() for x in xs]
    info.torch_ref(want, lists, 0.5)
    ours = [x.clone() for x in xs]
    info.call(ours, lists, torch.tensor(0.5))  # one number for every member, on the CPU
    assert all(torch.equal(a, b) for a, b in zip(ours, want))
    per_member = [x.clone() for x in xs]
    info.call(per_member, lists, torch.tensor([0.25, 0.75]))  # one number per member, on the CPU
    expected = [x.clone() for x in xs]
    info.call(expected, lists, [0.25, 0.75])
    assert all(torch.equal(a, b) for a, b in zip(per_member, expected))
