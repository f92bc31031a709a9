"""safe_ops.foreach_<op>_ against the per-tensor safe_ops.<op>_ (bitwise, per member) and torch's _foreach_ ops,
for every foreach op of the table (tests/op_table/: FOREACH_TABLE): odd members, numbers in every form, mixed
precision, number members, the fused op called directly. The in-place contract per member and bad input are in
test_foreach_contract.py, real EMA code and torch.compile in test_foreach_clients.py."""
import pytest
import torch

import safe_ops

from op_table import FOREACH_TABLE, foreach_ids
from op_table.samples import foreach_args, like, odd_members

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
IDS = foreach_ids()


def _call(info, members, number):
    """(foreach call, per-member reference call) for a member list: operands made here."""
    lists = info.operand_lists(lambda: like(members))
    return (lambda ts: info.call(ts, lists, number),
            lambda t, i: info.member_call(t, [x[i] for x in lists], _nth(number, i)))


def _nth(number, i):
    if isinstance(number, torch.Tensor):
        return float(number[i])
    return number[i] if isinstance(number, list) else number


def _numbers(kind, n, device):
    if kind == "number":
        return 0.3
    if kind == "large":  # lerp's other form (weight >= 0.5)
        return 0.75
    values = [0.1 + 0.8 * i / n for i in range(n)]
    return values if kind == "list" else torch.tensor(values, device=device, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["number", "large", "list", "tensor"])
@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_each_member_equals_the_per_tensor_op_bitwise(info, kind, dtype, device):
    torch.manual_seed(0)
    members = odd_members(dtype, device)
    number = _numbers(kind, len(members), device)
    fused, single = _call(info, members, number)
    expected = [single(m.clone(), i) for i, m in enumerate(members)]
    ptrs = [m.data_ptr() for m in members]
    results = fused(members)
    assert len(results) == len(members)
    for i, (r, m, e) in enumerate(zip(results, members, expected)):
        assert r is m and r.data_ptr() == ptrs[i], f"member {i} was not written in place"
        assert r.dtype == e.dtype and r.shape == e.shape and r.stride() == m.stride()
        assert torch.equal(r, e), f"{info.name}_ member {i} ({tuple(m.shape)}): max diff {(r - e).abs().max()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_close_to_torch_foreach_and_bitwise_where_exact(info, dtype):
    torch.manual_seed(0)
    ts = [torch.randn(s, dtype=dtype) for s in [(3,), (40, 7), (), (1000,)]]
    xs = info.operand_lists(lambda: [torch.randn(t.shape, dtype=dtype) for t in ts])
    w = 1.0 if info.exact_at_one else 0.3
    ours = info.call([t.clone() for t in ts], xs, w)
    theirs = [t.clone() for t in ts]
    info.torch_ref(theirs, xs, w)
    for a, b in zip(ours, theirs):
        if info.exact_at_one:  # a + 1·b is exact in both
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("member, operand", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                             (torch.float32, torch.float16), (torch.float16, torch.float64)],
                         ids=str)
@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_mixed_precision_is_one_rounding_of_the_opmath_result(info, member, operand, device):
    """fp32 EMA of a bf16 model and the reverse: computed from the operands' values, rounded once to the member."""
    torch.manual_seed(0)
    members = odd_members(member, device)
    wide = torch.float64 if torch.float64 in (member, operand) else torch.float32
    lists = info.operand_lists(lambda: like(members, operand))
    w = 0.3
    # The reference: the per-tensor op in the opmath dtype on exactly widened operands, rounded once.
    expected = [info.member_call(m.to(wide), [x[i].to(wide) for x in lists], w, fn=info.base).to(member)
                for i, m in enumerate(members)]
    results = info.call(members, lists, w)
    for i, (r, m, e) in enumerate(zip(results, members, expected)):
        assert r is m and r.dtype == member
        assert torch.equal(r, e), f"member {i}: max diff {(r.double() - e.double()).abs().max()}"


@pytest.mark.parametrize("info", [i for i in FOREACH_TABLE if i.declared.number_members],
                         ids=lambda i: i.name + "_")
def test_members_may_be_numbers(info):
    """An operand list member may be a Python number (the declaration's number_members): such members take the
    per-tensor path."""
    ts = [torch.randn(4), torch.randn(3, 2), torch.randn(())]
    others = [2.5, torch.randn(3, 2), -1]
    expected = [info.member_call(t.clone(), [o], 0.5) for t, o in zip(ts, others)]
    results = info.call(ts, [others], 0.5)
    for r, t, e in zip(results, ts, expected):
        assert r is t and torch.equal(r, e)
    results = info.inplace(ts, 1.0)  # one number for every member, as torch._foreach_<op>_(ts, 1.0)
    assert all(r is t for r, t in zip(results, ts))


def test_device_tensor_numbers_are_per_member_and_a_0dim_tensor_is_shared():
    ts = [torch.zeros(3), torch.zeros(2)]
    ends = [torch.ones(3), torch.ones(2)]
    safe_ops.foreach_lerp_(ts, ends, torch.tensor([0.25, 0.75]))
    assert torch.equal(ts[0], torch.full((3,), 0.25)) and torch.equal(ts[1], torch.full((2,), 0.75))
    safe_ops.foreach_add_(ts, ends, alpha=torch.tensor(2.0))
    assert torch.equal(ts[0], torch.full((3,), 2.25)) and torch.equal(ts[1], torch.full((2,), 2.75))


def test_members_that_read_each_other_are_updated_in_list_order_like_torch():
    # member 1's operand is member 0, and member 0's is member 1: torch's foreach runs them in order
    torch.manual_seed(0)
    a, b = torch.randn(1000), torch.randn(1000)
    ra, rb = a.clone(), b.clone()
    with torch.no_grad():
        safe_ops.foreach_add_([a, b], [b, a], alpha=2)
        torch._foreach_add_([ra, rb], [rb, ra], alpha=2)
    assert torch.equal(a, ra) and torch.equal(b, rb)
    flat = torch.randn(10)  # members that are disjoint slices of one buffer still take the fused pass
    ref = flat.clone()
    safe_ops.foreach_lerp_([flat[:4], flat[4:]], [torch.ones(4), torch.ones(6)], 0.5)
    torch.testing.assert_close(flat, ref.lerp(torch.ones(10), 0.5))


@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_fused_op_refuses_what_it_cannot_record_and_bumps_versions(info):
    """torch.ops.safe_ops.foreach_<op>_inplace called directly: a member needing a graph or a tangent is an error
    before anything is written, a plain write bumps every member's version."""
    import torch.autograd.forward_ad as fwAD

    ts, xs = foreach_args(info)
    fused = info.fused
    operands = [o for m in zip(*xs) for o in m]
    snapshot = [t.clone() for t in ts]
    ts[2].requires_grad_()
    with pytest.raises(RuntimeError, match="records no autograd graph"):
        fused(ts, operands, [0.5] * 3, None)
    ts[2].requires_grad_(False)
    with fwAD.dual_level():
        dual = [fwAD.make_dual(ts[0], torch.ones(4, dtype=torch.float64))] + ts[1:]
        with pytest.raises(RuntimeError, match="forward-mode tangent"):
            fused(dual, operands, [0.5] * 3, None)
    assert all(torch.equal(t, s) and t._version == 0 for t, s in zip(ts, snapshot))
    fused(ts, operands, [0.5] * 3, None)
    assert all(t._version == 1 for t in ts)


@pytest.mark.parametrize("info", FOREACH_TABLE, ids=[info.name for info in FOREACH_TABLE])
def test_opcheck_fused_op(info):
    torch.manual_seed(0)
    ts = [torch.randn(3, 4), torch.randn(5), torch.randn(())]
    operands = [torch.rand(t.shape) + 0.5 for t in ts for _ in info.declared.lists]
    op = info.fused
    torch.library.opcheck(op, (ts, operands, [0.3, 0.6, 0.9], None))
    torch.library.opcheck(op, (ts, operands, [], torch.tensor([0.3, 0.6, 0.9])))
