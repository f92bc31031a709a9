"""safe_ops.foreach_<op>_: the in-place contract per member (the per-tensor op's decision for each, autograd and
forward-mode records, saved memory, version counters) and bad input (torch's error type, every member unchanged),
for every foreach op of the table (tests/op_table/: FOREACH_TABLE)."""
import pytest
import torch

import safe_ops
from safe_ops._declarations import FOREACH_OPS

from op_table import FOREACH_TABLE, foreach_ids
from op_table.samples import foreach_args

IDS = foreach_ids()


# ---- the in-place contract per member ---------------------------------------------------------------------

def _situations():
    """Fresh members in the situations of the in-place rule table (grad mode), each with its end."""
    x = torch.randn(5, requires_grad=True)
    base = torch.randn(10)
    members = [x.sigmoid(),  # sigmoid saved its output
               torch.randn(5),  # plain
               base[:5],  # a view
               torch.randn(1).expand(5),  # overlapping elements
               torch.randn(5).t()]  # an alias-making view op
    return x, members, [torch.randn(5) for _ in members]


def test_each_member_gets_what_the_per_tensor_op_gives_it():
    """Per member the same decision as safe_ops.lerp_ (in place, a new tensor, or the same error), whatever the
    rules are: each situation is built twice, once for each call."""
    torch.manual_seed(0)
    _, members, ends = _situations()
    per_tensor = []
    for m, e in zip(members, ends):
        before = m.detach().clone()
        try:
            r = safe_ops.lerp_(m, e, 0.5)
            per_tensor.append((r is m, safe_ops.lerp(before, e, 0.5)))
        except Exception as error:  # noqa: BLE001
            per_tensor.append((type(error), None))
    torch.manual_seed(0)
    x, members, ends = _situations()
    before = [m.detach().clone() for m in members]
    errors = [kind for kind, _ in per_tensor if isinstance(kind, type)]
    if errors:
        with pytest.raises(errors[0]):
            safe_ops.foreach_lerp_(members, ends, 0.5)
        assert all(torch.equal(m.detach(), b) for m, b in zip(members, before))
        return
    results = safe_ops.foreach_lerp_(members, ends, 0.5)
    for i, (r, m, (in_place, want)) in enumerate(zip(results, members, per_tensor)):
        assert (r is m) == in_place, f"member {i}"
        assert torch.equal(r.detach(), want), f"member {i}"
        if not in_place:
            assert torch.equal(m.detach(), before[i]), f"member {i} was written"
    members[0].sum().backward()  # the saved sigmoid output is intact
    s = torch.sigmoid(x.detach())
    torch.testing.assert_close(x.grad, s * (1 - s))


def test_grad_mode_members_autograd_records_get_their_gradients():
    """In grad mode a member whose update autograd must record goes through safe_ops.<op>_, per member."""
    torch.manual_seed(0)
    leaves = [torch.randn(4, requires_grad=True) for _ in range(3)]
    ends = [torch.randn(4, requires_grad=True) for _ in range(3)]
    ts = [leaf * 2 for leaf in leaves]  # non-leaves nothing saved: written in place, recorded by autograd
    ts.append(torch.randn(4))  # and a plain member in the same call
    ends.append(torch.randn(4))
    results = safe_ops.foreach_lerp_(ts, ends, [0.2, 0.4, 0.6, 0.8])
    assert all(r is t for r, t in zip(results, ts))
    sum(r.sum() for r in results[:3]).backward()
    for leaf, end, w in zip(leaves, ends, [0.2, 0.4, 0.6]):
        torch.testing.assert_close(leaf.grad, torch.full((4,), 2 * (1 - w)))
        torch.testing.assert_close(end.grad, torch.full((4,), w))


def test_grad_mode_hazard_a_saved_member_is_never_corrupted():
    torch.manual_seed(0)
    x = torch.randn(6, requires_grad=True)
    y = torch.randn(6, requires_grad=True)
    s = torch.sigmoid(x)  # saved by SigmoidBackward
    t = torch.tanh(y)  # saved by TanhBackward
    others = [torch.randn(6), torch.randn(6)]
    results = safe_ops.foreach_add_([s, t], others, alpha=3.0)
    assert results[0] is not s and results[1] is not t
    (results[0].sum() + results[1].sum() + s.sum() + t.sum()).backward()
    sx, ty = torch.sigmoid(x.detach()), torch.tanh(y.detach())
    torch.testing.assert_close(x.grad, 2 * sx * (1 - sx))
    torch.testing.assert_close(y.grad, 2 * (1 - ty * ty))


@pytest.mark.parametrize("library", ["torch", "safe_ops"])
@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_no_grad_write_through_an_alias_of_saved_memory_raises_at_backward_like_torch(info, library):
    """A node saved `p`; the update writes `p.detach()` (an alias sharing p's version counter, invisible to the
    counts the in-place rules read). torch's foreach op bumps the version, so backward raises instead of reading
    the new values; the fused kernel must too (it once bumped nothing: a silently wrong gradient)."""
    ts, xs = foreach_args(info)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = (w * ts[1]).sum()  # MulBackward saved ts[1]
    aliases = [t.detach() for t in ts]
    versions = [t._version for t in ts]
    with torch.no_grad():
        if library == "torch":
            info.torch_ref(aliases, xs, 0.5)
        else:
            info.call(aliases, xs, 0.5)
    assert all(t._version > v for t, v in zip(ts, versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("grad_mode", [False, True])
@pytest.mark.parametrize("info", FOREACH_TABLE, ids=IDS)
def test_forward_mode_tangents_of_members_are_updated_like_torch_foreach(info, grad_mode):
    """Dual members and operands (torch.autograd.forward_ad; no_grad leaves forward AD on): every member's tangent
    is torch's foreach op's, also for the plain members of the same call (the fused kernel computes no tangent,
    so dual members take the per-tensor op)."""
    import torch.autograd.forward_ad as fwAD

    ts, xs = foreach_args(info, n=4)
    tangents, xtangents = foreach_args(info, n=4, seed=1)
    results = {}
    for library in ("torch", "safe_ops"):
        with fwAD.dual_level(), torch.set_grad_enabled(grad_mode):
            members = [fwAD.make_dual(t.clone(), d) if i % 2 == 0 else t.clone()
                       for i, (t, d) in enumerate(zip(ts, tangents))]
            ops = [[fwAD.make_dual(x, d) if i < 2 else x.clone() for i, (x, d) in enumerate(zip(xl, dl))]
                   for xl, dl in zip(xs, xtangents)]
            if library == "torch":
                info.torch_ref(members, ops, 0.5)
                out = members
            else:
                out = info.call(members, ops, 0.5)
            results[library] = [(fwAD.unpack_dual(t).primal.clone(), fwAD.unpack_dual(t).tangent) for t in out]
    for i, ((p, d), (tp, td)) in enumerate(zip(results["safe_ops"], results["torch"])):
        torch.testing.assert_close(p, tp, msg=f"member {i} value")
        assert (d is None) == (td is None), f"member {i}: tangent {d} vs torch {td}"
        if td is not None:
            torch.testing.assert_close(d, td, msg=f"member {i} tangent")


def test_every_op_that_writes_an_argument_has_its_own_autograd_kernel():
    """torch's boxed autograd fallback bumps no version and drops tangents: an op that writes an argument through
    it is a silently wrong gradient (the fused foreach kernels once were). Each such op registers an Autograd
    kernel that bumps versions (csrc/autograd/)."""
    import safe_ops._C  # noqa: F401  (registers the ops)

    mutating = []
    for name in torch._C._dispatch_get_all_op_names():
        if not name.startswith("safe_ops::"):
            continue
        op, _, overload = name.partition(".")
        schema = torch._C._get_schema(op, overload)
        if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            mutating.append(name)
    assert len(mutating) >= 4 + len(FOREACH_OPS), mutating  # the in-place variants and the fused foreach ops
    missing = [n for n in mutating if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "Autograd")]
    assert not missing, f"writes an argument with no Autograd kernel: {missing}"


def test_no_grad_update_of_a_saved_parameter_raises_and_writes_no_member():
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
    loss = (params[2].sigmoid() * params[2]).sum()  # a pending backward saved params[2]
    snapshot = [p.detach().clone() for p in params]
    with torch.no_grad(), pytest.raises(safe_ops.InplaceHazardError):
        safe_ops.foreach_lerp_(params, [torch.zeros(4)] * 3, 0.5)
    assert all(torch.equal(p.detach(), s) for p, s in zip(params, snapshot))
    loss.backward()
    with torch.no_grad():  # after the backward: every Parameter written in place
        results = safe_ops.foreach_lerp_(params, [torch.zeros(4)] * 3, 0.5)
    assert all(r is p for r, p in zip(results, params))
    assert all(torch.equal(p.detach(), s * 0.5) for p, s in zip(params, snapshot))


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket).split(".")[-1])
        return func(*args, **(kwargs or {}))


def test_plain_members_take_one_fused_call_and_graph_members_the_per_tensor_op():
    ts = [torch.randn(4) for _ in range(5)]
    ends = [torch.randn(4) for _ in range(5)]
    with _OpLog() as log:
        safe_ops.foreach_lerp_(ts, ends, 0.5)
    assert log.ops == ["foreach_lerp_inplace"]
    x = torch.randn(4, requires_grad=True)
    ts[2] = x * 1.0  # autograd must record this member's update
    with _OpLog() as log:
        results = safe_ops.foreach_lerp_(ts, ends, 0.5)
    assert results[2] is ts[2] and results[2].grad_fn is not None
    assert log.ops.count("foreach_lerp_inplace") == 1 and log.ops.count("lerp_inplace") == 1


# ---- bad input: torch's error type, every member unchanged ----------------------------------------------

def _a():
    return [torch.randn(3), torch.randn(4)]


BAD = [pytest.param(*bad, id=f"{info.name}_-{bad[0]}") for info in FOREACH_TABLE for bad in info.bad_inputs]


@pytest.mark.parametrize("desc, call, error, torch_call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_like_torch_and_changes_no_member(desc, call, error, torch_call):
    a = _a()
    snapshot = [(t, t.clone(), t._version) for t in a]
    with pytest.raises(error):
        call(a)
    assert all(torch.equal(t, c) and t._version == v for t, c, v in snapshot), desc
    if torch_call is not None:
        with pytest.raises(error):
            torch_call(_a())


def test_a_bad_member_after_copied_members_writes_none():
    """The slow path (members the rules copy) checks every member before computing any."""
    base = torch.randn(8)
    views = [base[:4], base[4:]]
    before = base.clone()
    with pytest.raises(RuntimeError):
        safe_ops.foreach_lerp_(views + [torch.randn(3)], [torch.randn(4), torch.randn(4), torch.randn(2)], 0.5)
    assert torch.equal(base, before)
