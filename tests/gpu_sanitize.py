"""Every safe_ops op, forward and backward, on CUDA, against a float64 CPU reference: small sizes, so it can run
under ``compute-sanitizer --tool memcheck`` (gpu_check.sh does that). Covers K > 8 for accumulate, broadcast,
non-contiguous (transposed, strided, offset by one element: unaligned), expanded inputs, odd sizes and
float16/bfloat16/float32/float64. ``--big`` instead runs a 2^31+ element case (64-bit indexing), if memory allows.

    python tests/gpu_sanitize.py          # exits 1 on any mismatch
    python tests/gpu_sanitize.py --big
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

import safe_ops

DEV = "cuda"
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


def case(name, safe_fn, ref_fn, inputs, dtype, grad=True):
    """inputs: list of CUDA tensors (or numbers); tensors of floating dtype get requires_grad when grad."""
    try:
        # detach(): a leaf with the same storage, strides and offset (clone() would not keep every layout)
        xs = [x.detach().requires_grad_(grad) if isinstance(x, torch.Tensor) and x.is_floating_point()
              else x for x in inputs]
        out = safe_fn(*xs)
        refs = [_ref(x).requires_grad_(grad) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                for x in inputs]
        want = ref_fn(*refs)
        compare(f"{name} fwd", out, want.detach(), dtype)
        if grad:
            g = torch.randn(out.shape, device=DEV, dtype=out.dtype)
            leaves = [x for x in xs if isinstance(x, torch.Tensor) and x.requires_grad]
            got = torch.autograd.grad(out, leaves, g, allow_unused=True)
            rleaves = [r for r, x in zip(refs, xs) if isinstance(x, torch.Tensor) and x.requires_grad]
            wgot = torch.autograd.grad(want, rleaves, _ref(g), allow_unused=True)
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


def variants(dtype):
    """(label, maker) pairs: maker(*shape) -> a CUDA tensor of that shape with an interesting layout."""
    def dense(*s):
        return torch.randn(*s, device=DEV, dtype=dtype)

    def transposed(*s):
        return torch.randn(*reversed(s), device=DEV, dtype=dtype).t() if len(s) == 2 else dense(*s)

    def strided(*s):
        t = torch.randn(*s[:-1], s[-1] * 2, device=DEV, dtype=dtype)
        return t[..., ::2]

    def offset(*s):  # storage offset of one element: misaligned for 16-byte vector loads
        n = 1
        for d in s:
            n *= d
        return torch.randn(n + 1, device=DEV, dtype=dtype)[1:].view(*s)

    return [("dense", dense), ("transposed", transposed), ("strided", strided), ("offset", offset)]


def run_all():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        f32 = dtype == torch.float32  # every layout and K for float32; a subset for the others (sanitizer time)
        for label, mk in variants(dtype):
            if not f32 and label not in ("dense", "offset"):
                continue
            for shape in ((37, 19), (3, 65537 // 3 + 1)) if f32 else ((37, 19),):
                tag = f"{dtype} {label} {shape}"
                a, b, c = mk(*shape), mk(*shape), mk(*shape)
                case(f"add {tag}", lambda x, y: safe_ops.add(x, y, alpha=2),
                     lambda x, y: torch.add(x, y, alpha=2), [a, b], dtype)
                case(f"sub {tag}", lambda x, y: safe_ops.sub(x, y, alpha=0.5),
                     lambda x, y: torch.sub(x, y, alpha=0.5), [a, b], dtype)
                case(f"add scalar {tag}", lambda x: safe_ops.add(x, 3.0, alpha=2),
                     lambda x: torch.add(x, 3.0, alpha=2), [a], dtype)
                case(f"addcmul {tag}", lambda x, y, z: safe_ops.addcmul(x, y, z, value=0.5),
                     lambda x, y, z: torch.addcmul(x, y, z, value=0.5), [a, b, c], dtype)
                case(f"lerp scalar {tag}", lambda x, y: safe_ops.lerp(x, y, 0.3),
                     lambda x, y: torch.lerp(x, y, 0.3), [a, b], dtype)
                case(f"lerp tensor {tag}", lambda x, y, w: safe_ops.lerp(x, y, w),
                     lambda x, y, w: torch.lerp(x, y, w), [a, b, mk(*shape).sigmoid()], dtype)
                for k in (1, 3, 8, 9, 17) if f32 else (9,):
                    xs = [mk(*shape) for _ in range(k)]
                    w = [0.5 + i for i in range(k)]
                    case(f"accumulate K={k} {tag}", lambda *t: safe_ops.accumulate(list(t)),
                         lambda *t: sum(t), xs, dtype)
                    case(f"accumulate K={k} weights {tag}", lambda *t: safe_ops.accumulate(list(t), w),
                         lambda *t: sum(wi * ti for wi, ti in zip(w, t)), xs, dtype)
                    wt = torch.randn(k, device=DEV, dtype=dtype)
                    case(f"accumulate K={k} weights tensor {tag}",
                         lambda ww, *t: safe_ops.accumulate(list(t), ww),
                         lambda ww, *t: sum(ww[i] * ti for i, ti in enumerate(t)), [wt] + xs, dtype)
        # broadcasting and expanded inputs
        row = torch.randn(1, 257, device=DEV, dtype=dtype)
        col = torch.randn(33, 1, device=DEV, dtype=dtype)
        full = torch.randn(33, 257, device=DEV, dtype=dtype)
        exp = torch.randn(257, device=DEV, dtype=dtype).expand(33, 257)
        tag = f"{dtype} broadcast"
        case(f"add {tag}", lambda x, y: safe_ops.add(x, y), lambda x, y: x + y, [row, col], dtype)
        case(f"add expanded {tag}", lambda x, y: safe_ops.add(x, y), lambda x, y: x + y, [full, exp], dtype)
        case(f"addcmul {tag}", lambda x, y, z: safe_ops.addcmul(x, y, z), lambda x, y, z: x + y * z,
             [full, row, col], dtype)
        case(f"lerp {tag}", lambda x, y, w: safe_ops.lerp(x, y, w), lambda x, y, w: x + w * (y - x),
             [full, row, col.sigmoid()], dtype)
        xs = [row, col, full] + [torch.randn(257, device=DEV, dtype=dtype) for _ in range(8)]
        case(f"accumulate K=11 {tag}", lambda *t: safe_ops.accumulate(list(t), [float(i) for i in range(11)]),
             lambda *t: sum(float(i) * x for i, x in enumerate(t)), xs, dtype)
        # in-place variants (plain accumulator: in place), with operands that need grad
        for k in (2, 12):
            total = torch.randn(4099, device=DEV, dtype=dtype)
            xs = [torch.randn(4099, device=DEV, dtype=dtype) for _ in range(k)]
            case(f"accumulate_ K={k} {dtype}",
                 lambda t0, *t: safe_ops.accumulate_(t0.detach().clone(), list(t), [1.5] * k),
                 lambda t0, *t: t0.detach() + sum(1.5 * x for x in t), [total] + xs, dtype)
        t0, x1, x2 = (torch.randn(4099, device=DEV, dtype=dtype) for _ in range(3))
        case(f"add_ {dtype}", lambda t, x: safe_ops.add_(t.detach().clone(), x, alpha=3),
             lambda t, x: t.detach() + 3 * x, [t0, x1], dtype)
        case(f"sub_ {dtype}", lambda t, x: safe_ops.sub_(t.detach().clone(), x, alpha=3),
             lambda t, x: t.detach() - 3 * x, [t0, x1], dtype)
        case(f"addcmul_ {dtype}", lambda t, x, y: safe_ops.addcmul_(t.detach().clone(), x, y, value=2),
             lambda t, x, y: t.detach() + 2 * x * y, [t0, x1, x2], dtype)
        case(f"lerp_ {dtype}", lambda t, x: safe_ops.lerp_(t.detach().clone(), x, 0.1),
             lambda t, x: t.detach() + 0.1 * (x - t.detach()), [t0, x1], dtype)
        # empty and one-element
        for n in (0, 1):
            e1, e2 = torch.randn(n, device=DEV, dtype=dtype), torch.randn(n, device=DEV, dtype=dtype)
            case(f"add n={n} {dtype}", lambda x, y: safe_ops.add(x, y), lambda x, y: x + y, [e1, e2], dtype)
            case(f"accumulate n={n} {dtype}", lambda x, y: safe_ops.accumulate([x, y]), lambda x, y: x + y,
                 [e1, e2], dtype)


def run_big():
    """2^31 + 3 float16 elements: indices past int32. Checks sampled positions, forward only plus add's
    backward scale."""
    n = (1 << 31) + 3
    free, total = torch.cuda.mem_get_info()
    need = 5 * n * 2
    if free < need * 1.2:
        print(f"--big: skipped, needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
        return
    a = torch.ones(n, device=DEV, dtype=torch.float16)
    b = torch.full((n,), 2.0, device=DEV, dtype=torch.float16)
    idx = torch.tensor([0, 1, (1 << 31) - 1, 1 << 31, n - 1], device=DEV)
    global checks
    out = safe_ops.add(a, b, alpha=2)
    checks += 1
    if not torch.all(out[idx] == 5):
        failures.append(f"big add: {out[idx].tolist()}")
    del out
    out = safe_ops.accumulate([a, b], [1.0, 3.0])
    checks += 1
    if not torch.all(out[idx] == 7):
        failures.append(f"big accumulate: {out[idx].tolist()}")
    del out
    safe_ops.addcmul_(a, b, b, value=0.25)  # a = 1 + 0.25*4 = 2
    checks += 1
    if not torch.all(a[idx] == 2):
        failures.append(f"big addcmul_: {a[idx].tolist()}")
    safe_ops.lerp_(a, b, 0.5)  # 2 -> 2
    torch.cuda.synchronize()
    print(f"--big: n = {n} float16 checked at {idx.tolist()}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--big", action="store_true", help="only the 2^31+ element case")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu checks this script itself")
    args = p.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    torch.manual_seed(0)
    if args.big:
        run_big()
    else:
        run_all()
    print(f"gpu_sanitize: {checks} checks, {len(failures)} failures")
    for f in failures[:50]:
        print("  FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
