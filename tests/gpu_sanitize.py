"""Every safe_ops op of the op table (tests/op_table/), forward and backward and in place, on CUDA, against a
float64 CPU reference: small sizes, so it can run under ``compute-sanitizer --tool memcheck`` (gpu_check.sh does
that). Covers the table's samples (K > 8 for accumulate, broadcast, expanded, transposed, sliced, offset by one
element: unaligned) in float16/bfloat16/float32/float64, plus odd sizes and layouts for each op's benchmark
call. ``--big`` instead runs every op on 2^31+ elements (64-bit indexing), if memory allows.

    python tests/gpu_sanitize.py          # exits 1 on any mismatch
    python tests/gpu_sanitize.py --subset # float16 and float32 only: what memcheck runs in gpu_check.sh's time
    python tests/gpu_sanitize.py --big
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

import safe_ops
from safe_ops._declarations import FOREACH_OPS

from op_table import FLOAT_DTYPES, OP_TABLE, Sample, make_tensor, reference_update, replace_tensors

DEV = "cuda"
DTYPES = FLOAT_DTYPES  # --subset: float16 and float32 (every vector width but float64's; every code path)
TOL = {torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float32: 2e-5, torch.float64: 1e-10}
failures = []
checks = 0


def _ref(t):
    return t.detach().cpu().double()


def compare(name, got, want, dtype):
    global checks
    checks += 1
    tol = TOL[dtype]
    got = got.detach().cpu().double()
    if got.shape != want.shape:
        failures.append(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
        return
    scale = want.abs().max().item() if want.numel() else 0.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    if err > tol * max(1.0, scale):
        failures.append(f"{name}: max error {err:.3g} (tolerance {tol * max(1.0, scale):.3g})")


def check(name, run, ref, sample, dtype, grad=True):
    """run(sample) on the device against ref(sample) on float64 CPU copies, forward and (grad) backward."""
    try:
        # detach(): a leaf with the same storage, strides and offset (clone() would not keep every layout)
        xs = replace_tensors(sample, lambda t: t.detach().requires_grad_(grad))
        refs = replace_tensors(sample, lambda t: _ref(t).requires_grad_(grad))
        out = run(xs)
        want = ref(refs)
        compare(f"{name} fwd", out, want.detach(), dtype)
        if grad:
            g = torch.randn(out.shape, device=DEV, dtype=out.dtype)
            got = torch.autograd.grad(out, xs.tensors(), g, allow_unused=True)
            wgot = torch.autograd.grad(want, refs.tensors(), _ref(g), allow_unused=True)
            for i, (a, b) in enumerate(zip(got, wgot)):
                if b is None:
                    continue
                if a is None:
                    failures.append(f"{name} grad {i}: None")
                    continue
                compare(f"{name} grad {i}", a, b, dtype)
        if DEV == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        failures.append(f"{name}: {type(e).__name__}: {e}")
        traceback.print_exc()


def _layouts(dtype):
    """Shapes and layouts beyond the op table's samples: vector-width tails, misaligned (offset) and strided."""
    for shape in ((37, 19), (3, 65537 // 3 + 1), (4099,)):
        for layout in ("contiguous", "transposed", "sliced", "offset"):
            if dtype != torch.float32 and layout not in ("contiguous", "offset"):
                continue  # a subset for the other dtypes (sanitizer time)
            yield shape, layout


def run_all():
    """Every op of the op table: its samples (all dtypes, broadcast, expanded, K > 8 for accumulate), forward
    and backward; then its benchmark call and its in-place update on the layouts above."""
    for info in OP_TABLE:
        for dtype in DTYPES:
            for sample in info.samples(dtype, DEV):
                check(f"{info.name} {dtype} {sample.desc}", lambda s: info.op(*s.args, **s.kwargs),
                      lambda s: info.ref(*s.args, **s.kwargs), sample, dtype, grad=not sample.large)
            for shape, layout in _layouts(dtype):
                a, b, c = (make_tensor(shape, dtype, DEV, layout) for _ in range(3))
                args, kwargs = info.bench(a, b, c)
                sample = Sample(args, kwargs)
                tag = f"{info.name} {dtype} {layout} {shape}"
                check(tag, lambda s: info.op(*s.args, **s.kwargs), lambda s: info.ref(*s.args, **s.kwargs),
                      sample, dtype)
                target = make_tensor(shape, dtype, DEV)  # a plain buffer (a view is never written in place)
                check(f"{tag} in place", lambda s: _written_in_place(info, s), lambda s: _reference_in_place(info, s),
                      Sample(info.update(target, a)[0], info.update(target, a)[1]), dtype, grad=False)


def run_foreach():
    """The fused foreach kernels, called directly (no in-place rules: views are written too) on members of every
    layout above in one call (misaligned, strided: several launches' worth of chunks for the bigger ones), and
    fp32 members with bf16 operands; against safe_ops' per-tensor op in float64 on the CPU."""
    for fop in FOREACH_OPS:
        base = getattr(safe_ops, fop.base)
        for dtype, operand_dtype in [(d, d) for d in DTYPES] + [(torch.float32, torch.bfloat16)]:
            members = [make_tensor(shape, dtype, DEV, layout) for shape, layout in _layouts(dtype)]
            members += [make_tensor((), dtype, DEV), make_tensor((0,), dtype, DEV)]
            operands = [make_tensor(tuple(m.shape), operand_dtype, DEV, low=0.5) for m in members for _ in fop.lists]
            values = [0.25 + 0.5 * (i % 2) for i in range(len(members))]  # both forms of an interpolation weight
            k = len(fop.lists)
            kw = {fop.number_keyword: None} if fop.number_keyword else {}
            want = []
            for i, m in enumerate(members):
                ops = [_ref(o) for o in operands[i * k:(i + 1) * k]]
                if fop.number_keyword:
                    kw[fop.number_keyword] = values[i]
                    want.append(base(_ref(m), *ops, **kw))
                else:
                    want.append(base(_ref(m), *ops, values[i]))
            name = f"foreach_{fop.base} {dtype}/{operand_dtype}"
            try:
                fused = getattr(torch.ops.safe_ops, f"{fop.name}_inplace").default
                fused(members, operands, values, None)
                for i, (m, w) in enumerate(zip(members, want)):
                    compare(f"{name} member {i}", m, w, dtype)
                fused(members, operands, [], torch.tensor(values, device=DEV))  # numbers read on the device
                if DEV == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001
                failures.append(f"{name}: {type(e).__name__}: {e}")
                traceback.print_exc()


def _written_in_place(info, s):
    args = (s.args[0].detach().clone(),) + s.args[1:]  # a fresh plain buffer: the variant must write it
    out = info.inplace(*args, **s.kwargs)
    if out is not args[0]:
        failures.append(f"{info.name}_: did not write the plain buffer in place")
    return out


def _reference_in_place(info, s):
    return reference_update(info, s.args, s.kwargs)


def run_big():
    """2^31 + 3 float16 elements: indices past int32. Every op's benchmark call (functional and in place),
    checked at sampled positions against torch on those elements."""
    n = (1 << 31) + 3
    free, total = torch.cuda.mem_get_info()
    need = 6 * n * 2
    if free < need * 1.2:
        print(f"--big: skipped, needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
        return
    global checks
    idx = torch.tensor([0, 1, (1 << 31) - 1, 1 << 31, n - 1], device=DEV)
    a = torch.full((n,), 0.25, device=DEV, dtype=torch.float16)
    b = torch.full((n,), 2.0, device=DEV, dtype=torch.float16)
    c = torch.full((n,), 0.5, device=DEV, dtype=torch.float16)
    for info in OP_TABLE:
        args, kwargs = info.bench(a, b, c)
        small = replace_tensors(Sample(args, kwargs), lambda t: t[idx].double())
        want = info.ref(*small.args, **small.kwargs)
        out = info.op(*args, **kwargs)
        checks += 1
        if not torch.allclose(out[idx].double(), want, rtol=2e-3):
            failures.append(f"big {info.name}: {out[idx].tolist()} != {want.tolist()}")
        del out
        buffer = torch.full((n,), 1.0, device=DEV, dtype=torch.float16)
        inplace_args, inplace_kwargs = info.bench_inplace(buffer, a, b, c)
        small = replace_tensors(Sample(inplace_args, inplace_kwargs), lambda t: t[idx].double())
        want = reference_update(info, small.args, small.kwargs)
        info.inplace(*inplace_args, **inplace_kwargs)
        checks += 1
        if not torch.allclose(buffer[idx].double(), want, rtol=2e-3):
            failures.append(f"big {info.name}_: {buffer[idx].tolist()} != {want.tolist()}")
        del buffer
    torch.cuda.synchronize()
    print(f"--big: n = {n} float16 checked at {idx.tolist()}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--big", action="store_true", help="only the 2^31+ element case")
    p.add_argument("--subset", action="store_true", help="float16 and float32 only (for memcheck's time)")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu checks this script itself")
    args = p.parse_args()
    global DEV, DTYPES
    DEV = args.device
    if args.subset:
        DTYPES = (torch.float16, torch.float32)
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    torch.manual_seed(0)
    if args.big:
        run_big()
    else:
        run_all()
        run_foreach()
    print(f"gpu_sanitize: {checks} checks, {len(failures)} failures")
    for f in failures[:50]:
        print("  FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
