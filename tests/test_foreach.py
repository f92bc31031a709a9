"""safe_ops.foreach_<op>_ against the per-tensor safe_ops.<op>_ (bitwise, per member) and torch's _foreach_ ops:
odd members, numbers in every form, mixed precision, the in-place contract per member, atomic bad input, EMA
code of timm and torch.optim.swa_utils rewritten on foreach_lerp_, the fused op's schema and fake kernel."""
import math

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import safe_ops
from safe_ops._declarations import FOREACH_OPS

from clients import client
from models import SmallResNet
from param_shapes import MODELS

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NAMES = [f.name + "_" for f in FOREACH_OPS]


def _odd_members(dtype, device):
    """Shapes and layouts a parameter list can hold: 0-dim, empty, 1-D, big (several kernel chunks), channels_last,
    transposed, a strided slice, sizes that leave vector tails."""
    def t(*shape):
        return torch.randn(shape, device=device).to(dtype)

    def strided(shape, stride):  # not a view (the rules would copy a view), not contiguous
        return torch.empty_strided(shape, stride, device=device, dtype=dtype).copy_(t(*shape))

    return [t(), t(0), t(7), t(3, 5), t(70001), t(2, 3, 4, 5).to(memory_format=torch.channels_last),
            strided((5, 3), (1, 5)), strided((6, 5), (10, 2)), t(1, 1), t(4099)]


def _like(members, dtype=None):
    out = []
    for m in members:
        o = torch.randn(m.shape, device=m.device).to(dtype or m.dtype)
        out.append(o.t().contiguous().t() if m.dim() == 2 and m.stride(0) == 1 else o)  # a layout of its own
    return out


def _call(name, members, number):
    """(foreach call, per-member reference call) for a member list: operands made here."""
    if name == "foreach_lerp_":
        ends = _like(members)
        return (lambda ts: safe_ops.foreach_lerp_(ts, ends, number),
                lambda t, i: safe_ops.lerp_(t, ends[i], _nth(number, i)))
    if name == "foreach_add_":
        others = _like(members)
        return (lambda ts: safe_ops.foreach_add_(ts, others, alpha=number),
                lambda t, i: safe_ops.add_(t, others[i], alpha=_nth(number, i)))
    t1, t2 = _like(members), _like(members)
    if name == "foreach_addcdiv_":
        t2 = [x.abs() + 0.5 for x in t2]
    base = name[len("foreach_"):]
    return (lambda ts: getattr(safe_ops, name)(ts, t1, t2, value=number),
            lambda t, i: getattr(safe_ops, base)(t, t1[i], t2[i], value=_nth(number, i)))


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
@pytest.mark.parametrize("name", NAMES)
def test_each_member_equals_the_per_tensor_op_bitwise(name, kind, dtype, device):
    torch.manual_seed(0)
    members = _odd_members(dtype, device)
    number = _numbers(kind, len(members), device)
    fused, single = _call(name, members, number)
    expected = [single(m.clone(), i) for i, m in enumerate(members)]
    ptrs = [m.data_ptr() for m in members]
    results = fused(members)
    assert len(results) == len(members)
    for i, (r, m, e) in enumerate(zip(results, members, expected)):
        assert r is m and r.data_ptr() == ptrs[i], f"member {i} was not written in place"
        assert r.dtype == e.dtype and r.shape == e.shape and r.stride() == m.stride()
        assert torch.equal(r, e), f"{name} member {i} ({tuple(m.shape)}): max diff {(r - e).abs().max()}"


TORCH_FOREACH = {
    "foreach_add_": lambda ts, xs, w: torch._foreach_add_(ts, xs[0], alpha=w),
    "foreach_lerp_": lambda ts, xs, w: torch._foreach_lerp_(ts, xs[0], w),
    "foreach_addcmul_": lambda ts, xs, w: torch._foreach_addcmul_(ts, xs[0], xs[1], value=w),
    "foreach_addcdiv_": lambda ts, xs, w: torch._foreach_addcdiv_(ts, xs[0], xs[1], value=w),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_close_to_torch_foreach_and_add_bitwise(name, dtype):
    torch.manual_seed(0)
    fop = next(f for f in FOREACH_OPS if f.name + "_" == name)
    ts = [torch.randn(s, dtype=dtype) for s in [(3,), (40, 7), (), (1000,)]]
    xs = [[torch.randn(t.shape, dtype=dtype) for t in ts] for _ in fop.lists]
    if name == "foreach_addcdiv_":
        xs[1] = [x.abs() + 0.5 for x in xs[1]]
    w = 1.0 if name == "foreach_add_" else 0.3
    ours = getattr(safe_ops, name)([t.clone() for t in ts], *xs, **{fop.number_keyword or fop.number: w})
    theirs = [t.clone() for t in ts]
    TORCH_FOREACH[name](theirs, xs, w)
    for a, b in zip(ours, theirs):
        if name == "foreach_add_":  # a + 1·b is exact in both
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("member, operand", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                             (torch.float32, torch.float16), (torch.float16, torch.float64)],
                         ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_is_one_rounding_of_the_opmath_result(name, member, operand, device):
    """fp32 EMA of a bf16 model and the reverse: computed from the operands' values, rounded once to the member."""
    torch.manual_seed(0)
    members = _odd_members(member, device)
    wide = torch.float64 if torch.float64 in (member, operand) else torch.float32
    fop = next(f for f in FOREACH_OPS if f.name + "_" == name)
    lists = [_like(members, operand) for _ in fop.lists]
    if name == "foreach_addcdiv_":
        lists[1] = [x.abs() + 0.5 for x in lists[1]]
    w = 0.3
    # The reference: the per-tensor op in the opmath dtype on exactly widened operands, rounded once.
    base = getattr(safe_ops, fop.base)
    kw = {fop.number_keyword: w} if fop.number_keyword else {}
    pos = () if fop.number_keyword else (w,)
    expected = [base(m.to(wide), *(x[i].to(wide) for x in lists), *pos, **kw).to(member)
                for i, m in enumerate(members)]
    results = getattr(safe_ops, name)(members, *lists, *pos, **kw)
    for i, (r, m, e) in enumerate(zip(results, members, expected)):
        assert r is m and r.dtype == member
        assert torch.equal(r, e), f"member {i}: max diff {(r.double() - e.double()).abs().max()}"


def test_add_members_may_be_numbers():
    ts = [torch.randn(4), torch.randn(3, 2), torch.randn(())]
    others = [2.5, torch.randn(3, 2), -1]
    expected = [safe_ops.add_(t.clone(), o, alpha=0.5) for t, o in zip(ts, others)]
    results = safe_ops.foreach_add_(ts, others, alpha=0.5)
    for r, t, e in zip(results, ts, expected):
        assert r is t and torch.equal(r, e)
    results = safe_ops.foreach_add_(ts, 1.0)  # one number for every member, as torch._foreach_add_(ts, 1.0)
    assert all(r is t for r, t in zip(results, ts))


def test_device_tensor_numbers_are_per_member_and_a_0dim_tensor_is_shared():
    ts = [torch.zeros(3), torch.zeros(2)]
    ends = [torch.ones(3), torch.ones(2)]
    safe_ops.foreach_lerp_(ts, ends, torch.tensor([0.25, 0.75]))
    assert torch.equal(ts[0], torch.full((3,), 0.25)) and torch.equal(ts[1], torch.full((2,), 0.75))
    safe_ops.foreach_add_(ts, ends, alpha=torch.tensor(2.0))
    assert torch.equal(ts[0], torch.full((3,), 2.25)) and torch.equal(ts[1], torch.full((2,), 2.75))


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


def _foreach_args(name, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fop = next(f for f in FOREACH_OPS if f.name + "_" == name)
    ts = [torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(n)]
    xs = [[torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(n)] for _ in fop.lists]
    if name == "foreach_addcdiv_":
        xs[1] = [x.abs() + 0.5 for x in xs[1]]
    return fop, ts, xs


@pytest.mark.parametrize("library", ["torch", "safe_ops"])
@pytest.mark.parametrize("name", NAMES)
def test_no_grad_write_through_an_alias_of_saved_memory_raises_at_backward_like_torch(name, library):
    """A node saved `p`; the update writes `p.detach()` (an alias sharing p's version counter, invisible to the
    counts the in-place rules read). torch's foreach op bumps the version, so backward raises instead of reading
    the new values; the fused kernel must too (it once bumped nothing: a silently wrong gradient)."""
    fop, ts, xs = _foreach_args(name)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = (w * ts[1]).sum()  # MulBackward saved ts[1]
    aliases = [t.detach() for t in ts]
    versions = [t._version for t in ts]
    with torch.no_grad():
        if library == "torch":
            TORCH_FOREACH[name](aliases, xs, 0.5)
        else:
            getattr(safe_ops, name)(aliases, *xs, **{fop.number_keyword or fop.number: 0.5})
    assert all(t._version > v for t, v in zip(ts, versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("grad_mode", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_tangents_of_members_are_updated_like_torch_foreach(name, grad_mode):
    """Dual members and operands (torch.autograd.forward_ad; no_grad leaves forward AD on): every member's tangent
    is torch's foreach op's, also for the plain members of the same call (the fused kernel computes no tangent,
    so dual members take the per-tensor op)."""
    import torch.autograd.forward_ad as fwAD

    fop, ts, xs = _foreach_args(name, n=4)
    _, tangents, xtangents = _foreach_args(name, n=4, seed=1)
    results = {}
    for library in ("torch", "safe_ops"):
        with fwAD.dual_level(), torch.set_grad_enabled(grad_mode):
            members = [fwAD.make_dual(t.clone(), d) if i % 2 == 0 else t.clone()
                       for i, (t, d) in enumerate(zip(ts, tangents))]
            ops = [[fwAD.make_dual(x, d) if i < 2 else x.clone() for i, (x, d) in enumerate(zip(xl, dl))]
                   for xl, dl in zip(xs, xtangents)]
            if library == "torch":
                TORCH_FOREACH[name](members, ops, 0.5)
                out = members
            else:
                out = getattr(safe_ops, name)(members, *ops, **{fop.number_keyword or fop.number: 0.5})
            results[library] = [(fwAD.unpack_dual(t).primal.clone(), fwAD.unpack_dual(t).tangent) for t in out]
    for i, ((p, d), (tp, td)) in enumerate(zip(results["safe_ops"], results["torch"])):
        torch.testing.assert_close(p, tp, msg=f"member {i} value")
        assert (d is None) == (td is None), f"member {i}: tangent {d} vs torch {td}"
        if td is not None:
            torch.testing.assert_close(d, td, msg=f"member {i} tangent")


@pytest.mark.parametrize("name", NAMES)
def test_fused_op_refuses_what_it_cannot_record_and_bumps_versions(name):
    """torch.ops.safe_ops.foreach_<op>_inplace called directly: a member needing a graph or a tangent is an error
    before anything is written, a plain write bumps every member's version."""
    import torch.autograd.forward_ad as fwAD

    fop, ts, xs = _foreach_args(name)
    fused = getattr(torch.ops.safe_ops, f"{fop.name}_inplace")
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


BAD = [
    ("list lengths", lambda a: safe_ops.foreach_lerp_(a, [torch.randn(3)], 0.5), RuntimeError,
     lambda a: torch._foreach_lerp_(a, [torch.randn(3)], 0.5)),
    ("last member's shape", lambda a: safe_ops.foreach_add_(a, [torch.randn(3), torch.randn(5)]), RuntimeError,
     lambda a: torch._foreach_add_(a, [torch.randn(3), torch.randn(5)])),
    ("addcmul second list", lambda a: safe_ops.foreach_addcmul_(a, a, a[:1]), RuntimeError,
     lambda a: torch._foreach_addcmul_(a, a, a[:1])),
    ("weights length", lambda a: safe_ops.foreach_lerp_(a, [t + 1 for t in a], [0.5]), RuntimeError,
     lambda a: torch._foreach_lerp_(a, [t + 1 for t in a], [0.5])),
    ("empty list", lambda a: safe_ops.foreach_lerp_([], [], 0.5), RuntimeError,
     lambda a: torch._foreach_lerp_([], [], 0.5)),
    ("device of the last operand", lambda a: safe_ops.foreach_lerp_(a, [torch.randn(3), torch.randn(4, device="meta")],
                                                                     0.5), RuntimeError,
     lambda a: torch._foreach_lerp_(a, [torch.randn(3), torch.randn(4, device="meta")], 0.5)),
    ("string weight", lambda a: safe_ops.foreach_lerp_(a, a, "x"), TypeError,
     lambda a: torch._foreach_lerp_(a, a, "x")),
    ("integer member", lambda a: safe_ops.foreach_add_(a + [torch.arange(3)], a + [torch.arange(3)]), TypeError, None),
    ("per-member tensor of the wrong length", lambda a: safe_ops.foreach_lerp_(a, a, torch.tensor([0.5, 0.5, 0.5])),
     RuntimeError, None),
]


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


# ---- real EMA code ---------------------------------------------------------------------------------------

class ModelEmaV3Foreach:
    """timm's ModelEmaV3 (timm/utils/model_ema.py) foreach branches, verbatim but for the lerp call (timm is not
    installed here: it pulls torchvision)."""

    def __init__(self, module, lerp):
        import copy

        self.module = copy.deepcopy(module)
        self.lerp = lerp

    @torch.no_grad()
    def apply_update_no_buffers_(self, model, decay: float):
        ema_params = tuple(self.module.parameters())
        model_params = tuple(model.parameters())
        self.lerp(ema_params, model_params, 1.0 - decay)
        for ema_b, model_b in zip(self.module.buffers(), model.buffers()):
            ema_b.detach().copy_(model_b)

    @torch.no_grad()
    def apply_update_(self, model, decay: float):
        ema_lerp_values = []
        model_lerp_values = []
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.is_floating_point():
                ema_lerp_values.append(ema_v)
                model_lerp_values.append(model_v)
            else:
                ema_v.copy_(model_v)
        return self.lerp(ema_lerp_values, model_lerp_values, 1.0 - decay)


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 3, 16, 16)).sum().backward()
        opt.step()
        yield


def test_timm_model_ema_v3_on_foreach_lerp_matches_torch_foreach():
    torch.manual_seed(0)
    model = SmallResNet()
    ours = ModelEmaV3Foreach(model, safe_ops.foreach_lerp_)
    theirs = ModelEmaV3Foreach(model, torch._foreach_lerp_)
    per_tensor = ModelEmaV3Foreach(model, lambda e, m, w: [safe_ops.lerp_(a, b, w) for a, b in zip(e, m)])
    for _ in _train_steps(model):
        for ema in (ours, theirs, per_tensor):
            ema.apply_update_no_buffers_(model, 0.9)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(),
                       per_tensor.module.state_dict().values()):
        assert torch.equal(a, c)  # bitwise the per-tensor op
        torch.testing.assert_close(a, b)


def test_timm_state_dict_update_matches_per_tensor_and_torch():
    """timm's default branch walks state_dict() values, detached aliases of the EMA's tensors: per member the
    same results as safe_ops.lerp_ gives them, and where those write in place the EMA is torch's."""
    torch.manual_seed(0)
    model = SmallResNet()
    ours = ModelEmaV3Foreach(model, safe_ops.foreach_lerp_)
    theirs = ModelEmaV3Foreach(model, torch._foreach_lerp_)
    per_tensor = ModelEmaV3Foreach(model, lambda e, m, w: [safe_ops.lerp_(a, b, w) for a, b in zip(e, m)])
    for _ in _train_steps(model):
        results = ours.apply_update_(model, 0.9)
        theirs.apply_update_(model, 0.9)
        expected = per_tensor.apply_update_(model, 0.9)
        for r, e in zip(results, expected):
            assert torch.equal(r, e)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(),
                       per_tensor.module.state_dict().values()):
        assert torch.equal(a, c)
        torch.testing.assert_close(a, b)


def test_averaged_model_multi_avg_fn_rewritten_on_foreach_lerp_matches_torch():
    def safe_ema_multi_avg_fn(decay):  # torch.optim.swa_utils.get_ema_multi_avg_fn, on safe_ops
        @torch.no_grad()
        def ema_update(ema_param_list, current_param_list, _):
            if torch.is_floating_point(ema_param_list[0]):
                safe_ops.foreach_lerp_(ema_param_list, current_param_list, 1 - decay)
            else:
                for p_ema, p_model in zip(ema_param_list, current_param_list):
                    p_ema.copy_(p_ema * decay + p_model * (1 - decay))
        return ema_update

    torch.manual_seed(0)
    model = SmallResNet()
    ours = AveragedModel(model, multi_avg_fn=safe_ema_multi_avg_fn(0.9), use_buffers=True)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in _train_steps(model):
        ours.update_parameters(model)
        theirs.update_parameters(model)
    for a, b in zip(ours.module.state_dict().values(), theirs.module.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(next(ours.module.parameters()), next(model.parameters()))


def test_mixed_fp32_ema_of_a_bf16_model_in_one_call():
    """timm falls back to _foreach_mul_ + _foreach_add_ here (lerp needs one dtype): one pass, rounded once."""
    torch.manual_seed(0)
    model = [torch.randn(s).bfloat16() for s in MODELS["mobilenet_v3_small"]()[:20]]
    ema = [p.float() for p in model]
    two_pass = [e.clone() for e in ema]
    torch._foreach_mul_(two_pass, 0.99)
    torch._foreach_add_(two_pass, model, alpha=0.01)
    safe_ops.foreach_lerp_(ema, model, 0.01)
    for a, b in zip(ema, two_pass):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_parameter_shape_tables_have_the_models_totals():
    totals = {name: (len(f()), sum(math.prod(s) for s in f())) for name, f in MODELS.items()}
    assert totals == {"mobilenet_v3_small": (142, 2542856), "resnet50": (161, 25557032),
                      "gpt2_small": (148, 124439808)}


# ---- the fused op, torch.compile ------------------------------------------------------------------------

@pytest.mark.parametrize("fop", FOREACH_OPS, ids=[f.name for f in FOREACH_OPS])
def test_opcheck_fused_op(fop):
    torch.manual_seed(0)
    ts = [torch.randn(3, 4), torch.randn(5), torch.randn(())]
    operands = [torch.rand(t.shape) + 0.5 for t in ts for _ in fop.lists]
    op = getattr(torch.ops.safe_ops, f"{fop.name}_inplace").default
    torch.library.opcheck(op, (ts, operands, [0.3, 0.6, 0.9], None))
    torch.library.opcheck(op, (ts, operands, [], torch.tensor([0.3, 0.6, 0.9])))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_fullgraph_state_update_writes_the_inputs_like_eager(backend):
    """As the per-tensor variants under torch.compile(fullgraph=True): no graph break, state written."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    ema = [torch.randn(4), torch.randn(2, 3), torch.randn(())]
    params = [torch.randn(t.shape) for t in ema]
    expected = [safe_ops.lerp(e, p, 0.25) for e, p in zip(ema, params)]

    def step(ema, params):
        out = safe_ops.foreach_lerp_(ema, params, 0.25)
        return sum(o.sum() for o in out)

    with torch.no_grad():
        total = torch.compile(step, fullgraph=True, backend=backend)(ema, params)
    for e, want in zip(ema, expected):
        torch.testing.assert_close(e, want)
    torch.testing.assert_close(total, sum(w.sum() for w in expected))


def test_compiled_grad_mode_member_gets_its_gradient():
    torch._dynamo.reset()
    x = torch.randn(4, requires_grad=True)
    end = torch.randn(4)

    def f(x, end):
        t = x * 2
        return safe_ops.foreach_lerp_([t, torch.zeros(4)], [end, end], 0.25)[0].sum()

    torch.compile(f, fullgraph=True, backend="aot_eager")(x, end).backward()
    torch.testing.assert_close(x.grad, torch.full((4,), 1.5))


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


def test_real_timm_model_ema_v3_foreach_branch_on_foreach_lerp_():
    """timm's own ModelEmaV3 (foreach=True): its _foreach_lerp_ over state_dict() values on safe_ops.foreach_lerp_
    gives the EMA torch._foreach_lerp_ gives, and the EMA module really changes."""
    timm_ema = client("timm.utils.model_ema")
    torch.manual_seed(0)
    model = SmallResNet()
    ours = timm_ema.ModelEmaV3(model, decay=0.9, foreach=True)
    theirs = timm_ema.ModelEmaV3(model, decay=0.9, foreach=True)
    ours._foreach_lerp_ = lambda ema_values, model_values, weight: safe_ops.foreach_lerp_(ema_values, model_values,
                                                                                         weight)
    before = [v.clone() for v in ours.module.state_dict().values()]
    for step, _ in enumerate(_train_steps(model)):
        ours.update(model, step=step)
        theirs.update(model, step=step)
    for a, b, c in zip(ours.module.state_dict().values(), theirs.module.state_dict().values(), before):
        torch.testing.assert_close(a, b)
        if a.is_floating_point() and a.numel() > 1:
            assert not torch.equal(a, c)
