"""Runs the DTensor checks on a 2-process gloo CPU mesh; rank 0 writes {check: error-or-None} as JSON to argv[1].

argv: results path and the mode: "single_dim" (this torch's private registration) or "fallback" (hidden:
the register_sharding path of an older torch). "__counts__" holds what each Partial/foreach check found.
"""
import json
import os
import re
import sys
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: the op table


def _checks(rank, ws):
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor, init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode

    import safe_ops
    from safe_ops import _distributed

    from op_table import FOREACH_TABLE, OP_TABLE

    _distributed.register()
    mesh = init_device_mesh("cpu", (ws,))
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64) + 0.5

    def dt(full, placement):
        if isinstance(placement, Partial):
            return DTensor.from_local(full / ws, mesh, [placement], run_check=False)
        return distribute_tensor(full, mesh, [placement])

    weights = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    d_weights = distribute_tensor(weights, mesh, [Replicate()])

    def w(a):  # the weights tensor matching the operands: a Replicate DTensor for DTensors
        return d_weights if isinstance(a, DTensor) else weights

    # Every row's DTensor cases (tests/op_table/: `dtensor`): ours(a, b, c, w) and ref(a, b, c, w) on n operands.
    ops = {case.id: (case.ours, case.ref, case.n) for info in OP_TABLE for case in info.dtensor}
    weight_grad_cases = {case.id: case.weight_grad for info in OP_TABLE for case in info.dtensor if case.weight_grad}
    placements = {"Shard(0)": Shard(0), "Shard(1)": Shard(1), "Replicate": Replicate(), "Partial": Partial()}
    results = {}

    def check(name, fn):
        try:
            fn()
            results[name] = None
        except Exception:  # noqa: BLE001  (recorded, reported by the test)
            results[name] = traceback.format_exc()

    for opname, (ours, ref, n) in ops.items():
        for pname, pl in placements.items():
            def values(ours=ours, ref=ref, n=n, pl=pl):
                fulls = [rnd(4, 6) for _ in range(3)]
                ds = [dt(f, pl) for f in fulls[:n]] + [None] * (3 - n)
                with CommDebugMode() as c_ours:
                    out = ours(*ds, w)
                with CommDebugMode() as c_ref:
                    expect = ref(*ds, w)
                torch.testing.assert_close(out.full_tensor(), ref(*fulls[:n], *([None] * (3 - n)), w))
                torch.testing.assert_close(out.full_tensor(), expect.full_tensor())
                # Never more collectives than torch (fewer where safe_ops keeps Partial: an op linear in its operands).
                assert c_ours.get_total_counts() <= c_ref.get_total_counts(), (
                    c_ours.get_comm_counts(), c_ref.get_comm_counts())
                assert out.placements == expect.placements or pl.is_partial(), (out.placements, expect.placements)
            check(f"values[{opname}-{pname}]", values)

        def broadcast(ours=ours, ref=ref, n=n):
            full = rnd(4, 6)
            row = [rnd(6) for _ in range(2)]
            ds = [dt(full, Shard(0))] + [dt(r, Replicate()) for r in row[: n - 1]] + [None] * (3 - n)
            with CommDebugMode() as c:
                out = ours(*ds, w)
            assert c.get_total_counts() == 0
            assert out.placements == (Shard(0),)
            torch.testing.assert_close(out.full_tensor(), ref(full, *row[: n - 1], *([None] * (3 - n)), w))
        check(f"broadcast[{opname}]", broadcast)

        def grads(ours=ours, ref=ref, n=n):
            fulls = [rnd(4, 6).requires_grad_() for _ in range(n)]
            ds = [dt(f.detach(), Shard(0)).requires_grad_() for f in fulls]
            args = ds + [None] * (3 - n)
            (ours(*args, w) ** 2).full_tensor().sum().backward()
            (ref(*fulls, *([None] * (3 - n)), w) ** 2).sum().backward()
            for d, f in zip(ds, fulls):
                torch.testing.assert_close(d.grad.full_tensor(), f.grad)
        check(f"grad[{opname}]", grads)

    def weight_grads(opname, pl):
        # The weights need a gradient too (a weights tensor of Replicate, or a tensor weight of the operands'
        # placement: the row's weight_grad), against the torch composition on plain tensors and on the same DTensors.
        ours, ref, weight_of, nleaves = weight_grad_cases[opname]
        fulls = [rnd(4, 6) for _ in range(3)]
        wfull = weight_of(fulls, weights)
        leaves = [f.clone().requires_grad_() for f in fulls] + [wfull.clone().requires_grad_()]
        mine = [dt(f, pl).requires_grad_() for f in fulls] + [distribute_tensor(wfull, mesh, [Replicate()])
                                                              .requires_grad_()]
        theirs = [dt(f, pl).requires_grad_() for f in fulls] + [distribute_tensor(wfull, mesh, [Replicate()])
                                                                .requires_grad_()]
        mine, theirs, leaves = mine[:nleaves], theirs[:nleaves], leaves[:nleaves]
        (ours(mine).full_tensor() ** 2).sum().backward()
        (ref(theirs).full_tensor() ** 2).sum().backward()
        (ref(leaves) ** 2).sum().backward()
        for m, t, f in zip(mine, theirs, leaves):
            torch.testing.assert_close(m.grad.full_tensor(), f.grad)
            if not pl.is_partial():  # torch 2.14's own interpolation on Partial DTensors gives input a wrong gradient
                torch.testing.assert_close(m.grad.full_tensor(), t.grad.full_tensor())

    for opname in weight_grad_cases:
        for pname, pl in placements.items():
            check(f"weight_grad[{opname}-{pname}]", lambda opname=opname, pl=pl: weight_grads(opname, pl))

    inplace = {f"{info.name}_": info.dtensor_inplace for info in OP_TABLE if info.dtensor_inplace}
    for opname, (ours, ref) in inplace.items():
        for pname, pl in list(placements.items())[:3]:
            def inpl(ours=ours, ref=ref, pl=pl):
                a, b = rnd(4, 6), rnd(4, 6)
                da, db = dt(a, pl), dt(b, pl)
                out = ours(da, db)
                assert out is da, "not written in place"
                ref(a, b)
                torch.testing.assert_close(da.full_tensor(), a)
            check(f"inplace[{opname}-{pname}]", inpl)
    def backward_ops(pl):
        # dot_many: K dot products of grad with each tensor (a broadcast one among them): Shard gives Partial(sum),
        # Replicate Replicate, no communication. scale_many with a weights tensor (Replicate): grad's placement.
        g, a, row = rnd(4, 6), rnd(4, 6), rnd(6)
        dg = dt(g, pl)
        others = [dt(a, pl if not pl.is_partial() else Replicate()), dt(row, Replicate())]
        with CommDebugMode() as c:
            dots = torch.ops.safe_ops.dot_many(dg, others)
            scaled = torch.ops.safe_ops.scale_many.weights_tensor(dg, d_weights)
        assert c.get_total_counts() == 0, c.get_comm_counts()
        expect = (Replicate(),) if pl == Replicate() else (Partial(pl.reduce_op) if pl.is_partial() else Partial(),)
        assert dots.placements == expect, dots.placements
        torch.testing.assert_close(dots.full_tensor(), torch.stack([(g * a).sum(), (g * row).sum()]))
        assert [x.placements for x in scaled] == [dg.placements] * 3
        for x, k in zip(scaled, weights):
            torch.testing.assert_close(x.full_tensor(), k * g)

    for pname, pl in placements.items():
        check(f"backward_ops[{pname}]", lambda pl=pl: backward_ops(pl))

    def comm(mode):
        return {str(k).rsplit(".", 1)[-1].split("'")[0]: v for k, v in mode.get_comm_counts().items() if v}

    def counted(fn):
        """(the CommDebugMode it ran under, its result, the RuntimeError (or DTensor's ValueError) it raised or
        None)."""
        mode = CommDebugMode()
        try:
            with mode:
                return mode, fn(), None
        except (RuntimeError, ValueError) as exc:
            return mode, None, exc

    def partial_inplace(ours, ref, pa, pb):
        # torch's in-place op on the same DTensors decides: its values, placement and collectives; where torch
        # raises (no strategy keeps the target's placement), safe_ops raises too, or, for an op linear in its
        # operands, keeps the Partial target with no collective and the functional op's values.
        a, b = rnd(4, 6), rnd(4, 6)
        da, db, ta, tb = dt(a.clone(), pa), dt(b.clone(), pb), dt(a.clone(), pa), dt(b.clone(), pb)
        expect_full = ref(a.clone(), b.clone())
        c_ref, _, torch_error = counted(lambda: ref(ta, tb))
        c_ours, out, exc = counted(lambda: ours(da, db))
        if exc is not None:
            if torch_error is None:
                raise AssertionError(f"torch writes it ({ta.placements}), safe_ops raised") from exc
            assert _names_the_placements(exc), exc
            return "raises, as torch"
        assert out is da, "not written in place"
        assert da.placements == (pa,), da.placements
        torch.testing.assert_close(da.full_tensor(), expect_full)
        if torch_error is not None:
            assert pa.is_partial() and c_ours.get_total_counts() == 0, (comm(c_ours), torch_error)
            return f"kept Partial, {comm(c_ours)} (torch raises)"
        assert ta.placements == da.placements, (ta.placements, da.placements)
        assert comm(c_ours) == comm(c_ref), (comm(c_ours), comm(c_ref))
        return f"{comm(c_ours)} = torch"

    pairs = [("Partial", "Partial"), ("Partial", "Replicate"), ("Partial", "Shard(0)"), ("Replicate", "Partial"),
             ("Shard(0)", "Partial"), ("Replicate", "Shard(0)")]
    counts = {}
    # A row's own call for these checks where it has one (dtensor_partial_inplace).
    partial_ops = {f"{info.name}_": info.dtensor_partial_inplace or info.dtensor_inplace for info in OP_TABLE
                   if info.dtensor_inplace}
    for opname, (ours, ref) in partial_ops.items():
        for pa, pb in pairs:
            name = f"inplace_partial[{opname}-{pa}-{pb}]"

            def run(ours=ours, ref=ref, pa=pa, pb=pb, name=name):
                counts[name] = partial_inplace(ours, ref, placements[pa], placements[pb])
            check(name, run)

    foreach = {  # name: (safe_ops, torch, number of operand lists, the number), from every foreach row
        f"{info.name}_": (lambda t, o, info=info: info.call(t, o, info.dtensor_number),
                          lambda t, o, info=info: info.torch_ref(t, o, info.dtensor_number),
                          len(info.declared.lists), info.dtensor_number)
        for info in FOREACH_TABLE}
    layouts = {  # members' placements, operands' placements
        "same": (["Shard(0)", "Shard(1)", "Replicate"], ["Shard(0)", "Shard(1)", "Replicate"]),
        "mixed": (["Shard(0)", "Replicate", "Shard(1)"], ["Replicate", "Shard(0)", "Shard(0)"]),
        "partial": (["Partial", "Partial"], ["Partial", "Replicate"]),
    }

    def foreach_check(ours, ref, nlists, layout, fused=None):
        # safe_ops.foreach_<op>_ (or, with `fused`, its fused kernel called directly) against torch._foreach_<op>_
        # on the same DTensors, judged as partial_inplace judges the in-place ops.
        pm, po = layouts[layout]
        fulls = [rnd(4, 6) for _ in pm]
        opfulls = [[rnd(4, 6) for _ in pm] for _ in range(nlists)]
        expect = [f.clone() for f in fulls]
        ref(expect, opfulls)

        def make():
            return ([dt(f.clone(), placements[p]) for f, p in zip(fulls, pm)],
                    [[dt(f.clone(), placements[p]) for f, p in zip(fs, po)] for fs in opfulls])
        (mine, mine_ops), (theirs, their_ops) = make(), make()
        def run_ours():
            if fused is None:
                return ours(mine, mine_ops)
            fused(mine, [o for member in zip(*mine_ops) for o in member], [foreach[fused_name][3]] * len(mine), None)
            return mine

        c_ref, _, torch_error = counted(lambda: ref(theirs, their_ops))
        # torch 2.11's foreach ops on Partial members all-reduce copies and leave the members as they were: no
        # reference for values or collectives there (2.13 and later raise or keep them Partial)
        torch_wrong = torch_error is None and not all(
            torch.allclose(t.full_tensor(), e) for t, e in zip(theirs, expect))
        c_ours, out, exc = counted(run_ours)
        if exc is not None:
            if torch_error is None and not torch_wrong:
                raise AssertionError("torch writes them, safe_ops raised") from exc
            assert _names_the_placements(exc), exc
            return "raises, as torch" if torch_error is not None else "raises (torch writes wrong values)"
        assert all(o is m for o, m in zip(out, mine)), "not written in place"
        for m, p, e in zip(mine, pm, expect):
            assert m.placements == (placements[p],), m.placements
            torch.testing.assert_close(m.full_tensor(), e)
        if torch_error is not None or torch_wrong:
            assert c_ours.get_total_counts() == 0, (comm(c_ours), torch_error)
            return f"kept Partial, {comm(c_ours)} (torch {'raises' if torch_error else 'writes wrong values'})"
        assert comm(c_ours) == comm(c_ref), (comm(c_ours), comm(c_ref))
        return f"{comm(c_ours)} = torch"

    for fused_name, (ours, ref, nlists, _) in foreach.items():
        kernel = getattr(torch.ops.safe_ops, fused_name[:-1] + "_inplace").default
        for layout in layouts:
            for how, fused in (("", None), ("fused_kernel:", kernel)):
                name = f"foreach[{how}{fused_name}-{layout}]"

                def run(ours=ours, ref=ref, nlists=nlists, layout=layout, fused=fused, name=name):
                    counts[name] = foreach_check(ours, ref, nlists, layout, fused)
                check(name, run)
    results["__counts__"] = counts
    def broadcast_inplace():
        # A Replicate row broadcast against the target: Shard(1) of the target is Shard(0) of the row.
        a, row = rnd(4, 6), rnd(6)
        da, drow = dt(a.clone(), Shard(1)), dt(row, Replicate())
        with CommDebugMode() as c:
            assert safe_ops.add_(da, drow, alpha=2) is da
        assert c.get_total_counts() == 0 and da.placements == (Shard(1),)
        torch.testing.assert_close(da.full_tensor(), a + 2 * row)
        for shape in ((1, 6), (5, 6)):  # an empty and an uneven shard (FSDP2 shards small parameters so)
            a, b = rnd(*shape), rnd(*shape)
            da, db = dt(a.clone(), Shard(0)), dt(b, Shard(0))
            with CommDebugMode() as c:
                assert safe_ops.add_(da, db, alpha=2) is da
                assert safe_ops.accumulate_(da, [db], d_weights[:1]) is da
                for info in FOREACH_TABLE:  # every foreach op, with b as each operand
                    info.call([da], [[db]] * len(info.declared.lists), info.dtensor_number)
            assert c.get_total_counts() == 0 and da.placements == (Shard(0),), c.get_comm_counts()
            expect = [a + 2 * b + weights[0] * b]
            for info in FOREACH_TABLE:
                info.torch_ref(expect, [[b]] * len(info.declared.lists), info.dtensor_number)
            torch.testing.assert_close(da.full_tensor(), expect[0])
    check("inplace_broadcast", broadcast_inplace)

    def mesh_2d():
        # A (1, ws) mesh: the rules expand over both mesh dims (in-place, a weights tensor, the fused foreach kernel).
        mesh2 = init_device_mesh("cpu", (1, ws))
        a, b, c = rnd(4, 6), rnd(4, 6), rnd(4, 6)
        pls = [Replicate(), Shard(0)]
        da, db = distribute_tensor(a.clone(), mesh2, pls), distribute_tensor(b, mesh2, [Replicate(), Shard(1)])
        ta, tb = distribute_tensor(a.clone(), mesh2, pls), distribute_tensor(b, mesh2, [Replicate(), Shard(1)])
        with CommDebugMode() as c_ours:
            safe_ops.add_(da, db)
        with CommDebugMode() as c_ref:
            ta.add_(tb)
        assert comm(c_ours) == comm(c_ref) and da.placements == ta.placements, (comm(c_ours), comm(c_ref))
        torch.testing.assert_close(da.full_tensor(), a + b)
        w2 = distribute_tensor(weights[:2], mesh2, [Replicate(), Replicate()])
        out = safe_ops.accumulate([distribute_tensor(x, mesh2, pls) for x in (b, c)], w2)
        assert out.placements == tuple(pls), out.placements
        torch.testing.assert_close(out.full_tensor(), weights[0] * b + weights[1] * c)
        members = [distribute_tensor(x.clone(), mesh2, p) for x, p in ((a, pls), (b, [Replicate(), Shard(1)]))]
        ends = [distribute_tensor(x, mesh2, [Replicate(), Replicate()]) for x in (c, a)]
        torch.ops.safe_ops.foreach_lerp_inplace.default(members, ends, [0.25, 0.25], None)
        assert [m.placements for m in members] == [tuple(pls), (Replicate(), Shard(1))]
        torch.testing.assert_close(members[0].full_tensor(), torch.lerp(a, c, 0.25))
        torch.testing.assert_close(members[1].full_tensor(), torch.lerp(b, a, 0.25))
    check("mesh_2d", mesh_2d)

    def strided_inplace():
        # FSDP2 over tensor parallel lays parameters out as _StridedShard: an EMA written in place keeps it, with the
        # collectives of torch's lerp_ (none for an operand of the same layout or Replicate).
        from torch.distributed.tensor.placement_types import _StridedShard

        pl = _StridedShard(0, split_factor=2)
        for other in (pl, Replicate()):
            a, b = rnd(8, 6), rnd(8, 6)
            da, db = distribute_tensor(a.clone(), mesh, [pl]), distribute_tensor(b.clone(), mesh, [other])
            ta, tb = distribute_tensor(a.clone(), mesh, [pl]), distribute_tensor(b.clone(), mesh, [other])
            c_ref, _, torch_error = counted(lambda: ta.lerp_(tb, 0.25))
            if torch_error is not None:
                # torch 2.11 cannot redistribute an operand to _StridedShard (its lerp_ raises the same ValueError)
                with pytest.raises(type(torch_error), match=re.escape(str(torch_error))):
                    safe_ops.lerp_(da, db, 0.25)
                continue
            with CommDebugMode() as c_ours:
                assert safe_ops.lerp_(da, db, 0.25) is da
            assert comm(c_ours) == comm(c_ref) and da.placements == ta.placements == (pl,), (comm(c_ours), comm(c_ref))
            # Shard by shard against torch's lerp_ on the same layout (torch 2.11 cannot full_tensor() a
            # _StridedShard on a 1-D mesh), and whole where this torch can gather it.
            torch.testing.assert_close(da.to_local(), ta.to_local())
            safe_ops.foreach_lerp_([da], [db], 0.5)
            ta.lerp_(tb, 0.5)
            assert da.placements == (pl,)
            torch.testing.assert_close(da.to_local(), ta.to_local())
            if _can_gather_strided():
                torch.testing.assert_close(da.full_tensor(), torch.lerp(torch.lerp(a, b, 0.25), b, 0.5))
    check("inplace_strided", strided_inplace)
    check("fsdp2_ema", lambda: _fsdp2(rank, ws))
    check("tp_mlp", lambda: _tp(mesh))
    return results


def _names_the_placements(exc) -> bool:
    """DTensor's error for an in-place op that would change its target's placement; torch 2.11 raises its
    redistribution error first where the operand's redistribution is missing (Shard to Partial), for its own ops
    too."""
    return "placement" in str(exc) or "redistribute from" in str(exc)


def _can_gather_strided() -> bool:
    from torch.torch_version import TorchVersion

    return TorchVersion(torch.__version__) >= "2.13"


class _Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, x):
        import safe_ops

        return safe_ops.add_(torch.tanh(self.lin(x)), x)  # the residual, in place when safe


def _fsdp2(rank, ws):

    from torch.distributed.fsdp import fully_shard

    import safe_ops

    def make():
        torch.manual_seed(1)
        return torch.nn.Sequential(*[_Block(8) for _ in range(3)])

    torch.manual_seed(2)
    data = [torch.randn(4 * ws, 8) for _ in range(3)]
    ref, ref_ema = make(), make()
    model, ema = make(), make()
    for m in (model, ema):
        for b in m:
            fully_shard(b)
        fully_shard(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for x in data:
        model(x.chunk(ws)[rank]).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        ref(x).pow(2).mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()
        with torch.no_grad():
            params = list(ema.parameters())
            for i, (e, p) in enumerate(zip(params, model.parameters())):
                if i % 2:
                    assert safe_ops.lerp_(e, p, 0.25) is e
            safe_ops.foreach_lerp_(params[::2], list(model.parameters())[::2], 0.25)
            torch._foreach_lerp_(list(ref_ema.parameters()), list(ref.parameters()), 0.25)
    for e, r in zip(ema.parameters(), ref_ema.parameters()):
        torch.testing.assert_close(e.full_tensor(), r)


def _tp(mesh):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    import safe_ops

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(8, 16)
            self.down = torch.nn.Linear(16, 8)

        def forward(self, x):
            return safe_ops.add(self.down(torch.relu(self.up(x))), x)

    torch.manual_seed(3)
    ref = MLP()
    model = MLP()
    model.load_state_dict(ref.state_dict())
    parallelize_module(model, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
    x = torch.randn(4, 8)
    out, expect = model(x), ref(x)
    torch.testing.assert_close(out, expect)
    out.pow(2).sum().backward()
    expect.pow(2).sum().backward()
    for (n, p), r in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.full_tensor(), r.grad, msg=n)


def _hide_private_registration():
    """A torch without the private single-dim pointwise registration (older torch, 2.11): safe_ops must fall back on
    register_sharding. Done before safe_ops registers its rules (it is imported after this); on a torch that has
    none (2.11) there is nothing to hide."""
    assert "safe_ops" not in sys.modules
    from torch.distributed.tensor._ops import _pointwise_ops

    if hasattr(_pointwise_ops, "_register_single_dim_pointwise"):
        del _pointwise_ops._register_single_dim_pointwise


def _run(rank, ws, path, mode):
    # A file rendezvous next to the results: no port to pick, so no race with another process for one.
    dist.init_process_group("gloo", init_method=f"file://{path}.store", rank=rank, world_size=ws)
    try:
        if mode == "fallback":
            _hide_private_registration()
        results = _checks(rank, ws)
        from safe_ops import _distributed

        expect = "register_sharding" if mode == "fallback" else "single_dim"
        results["backend"] = None if _distributed.BACKEND == expect else f"{_distributed.BACKEND}, not {expect}"
        dist.barrier()  # both ranks done (the 2-D mesh's groups included) before the groups are torn down
        if rank == 0:
            with open(path, "w") as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(_run, args=(2, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "single_dim"), nprocs=2, join=True)
