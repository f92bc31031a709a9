"""Scenario 5: roofline. Each op's forward and backward GB/s from 4K to 64M float32 elements, against the
machine's own streaming bandwidth measured at the same size in the same run.

GB/s = the bytes the op must move at minimum / median time: each operand read once, each result written once,
a gradient that is just ``g`` (or the identity) costs nothing. Two classes, reported separately because on the
CPU a fresh result costs page faults that can outweigh the arithmetic:
  - "existing": the result goes into a preallocated buffer — the in-place variants (``safe_ops.add_`` ...)
    and torch's own in-place ops; reference: the better of ``dst.copy_(a)`` and ``torch.add(a, b, out=c)``;
  - "alloc": the result is a new tensor — the functional ops and every backward (autograd allocates the
    gradients); reference: the better of ``a.clone()`` and ``torch.add(a, b)``.
Sizes: 4K, 1M, 16M by default; --all: 4K, 64K, 1M, 4M, 16M, 64M (64M = 256 MB per operand).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch

from harness import Context, contention_probe, gbps, main_for, progress, time_interleaved
from op_table import OP_TABLE

SCENARIO = "5 roofline"
ORDER = 5


def _twin_names(info) -> Dict[str, str]:
    twins = {}
    if info.torch_twin is not None:
        twins[f"safe_ops.{info.name}"] = f"torch.{info.name}"
    if info.torch_inplace():
        twins[f"safe_ops.{info.name}_"] = f"torch Tensor.{info.name}_"
    return twins


# each safe_ops op and torch's own op doing the same work (same bytes), for the speed_vs_torch figure
TORCH_TWIN = {k: v for info in OP_TABLE for k, v in _twin_names(info).items()}


def _inputs(n, device, grad=False):
    return [torch.randn(n, device=device, requires_grad=grad) for _ in range(3)]


def _call(fn, args, kwargs) -> Callable:
    return lambda: fn(*args, **kwargs)


def stream_cases(n, device) -> List[Tuple[str, str, int, Callable]]:
    a, b, _ = _inputs(n, device)
    out = torch.empty(n, device=device)
    return [
        ("copy_ (existing)", "existing", 2, lambda: out.copy_(a)),
        ("torch.add(out=) (existing)", "existing", 3, lambda: torch.add(a, b, out=out)),
        ("clone() (alloc)", "alloc", 2, lambda: a.clone()),
        ("torch.add (alloc)", "alloc", 3, lambda: torch.add(a, b)),
    ]


def fwd_cases(n, device, full) -> List[Tuple[str, str, int, Callable]]:
    """Every op of the op table (tests/op_table/), its in-place variant and torch's twins, on its
    benchmark call."""
    a, b, c = _inputs(n, device)
    out = torch.randn(n, device=device)
    cases = []
    for info in OP_TABLE:
        args, kwargs = info.bench(a, b, c)
        inplace_args, inplace_kwargs = info.bench_inplace(out, a, b, c)
        cases.append((f"safe_ops.{info.name}_", "existing", info.bench_inplace_streams(),
                      _call(info.inplace, inplace_args, inplace_kwargs)))
        cases.append((f"safe_ops.{info.name}", "alloc", info.streams, _call(info.op, args, kwargs)))
        if info.torch_inplace():
            method = getattr(out, info.torch_inplace())
            cases.append((f"torch Tensor.{info.name}_", "existing", info.bench_inplace_streams(),
                          _call(method, inplace_args[1:], inplace_kwargs)))
        if info.torch_twin is not None:
            cases.append((f"torch.{info.name}", "alloc", info.streams, _call(info.torch_twin, args, kwargs)))
    # the in-place variants must really write in place here (a plain buffer), or the figure is meaningless
    for name, cls, _, fn in cases:
        if cls == "existing" and name.startswith("safe_ops"):
            assert fn() is out, f"{name} did not write into the buffer"
    return cases


def bwd_cases(n, device) -> List[Tuple[str, str, int, Callable]]:
    a, b, c = _inputs(n, device, grad=True)
    g = torch.randn(n, device=device)
    cases = []
    for info in OP_TABLE:
        args, kwargs = info.bench(a, b, c)
        inputs = tuple(t for t in (a, b, c) if any(t is x for x in _flat(args)))
        forwards = [(f"safe_ops.{info.name}", info.op)]
        if info.torch_twin is not None:
            forwards.append((f"torch.{info.name}", info.torch_twin))
        for name, fn in forwards:
            out = fn(*args, **kwargs)
            cases.append((name, "alloc", info.backward_streams,
                          (lambda out=out, inputs=inputs: torch.autograd.grad(out, inputs, g, retain_graph=True))))
    return cases


def _flat(args) -> list:
    flat = []
    for x in args:
        flat += list(x) if isinstance(x, (list, tuple)) else [x]
    return flat


def run(ctx: Context) -> None:
    cuda = ctx.device.startswith("cuda")
    if ctx.quick:
        sizes = [4096, 1 << 16]
    elif ctx.full:
        sizes = [4096, 1 << 16, 1 << 20, 4 << 20, 16 << 20, 64 << 20] + ([256 << 20] if cuda else [])
    elif cuda:
        sizes = [4096, 1 << 20, 16 << 20, 64 << 20]
    else:
        sizes = [4096, 1 << 20, 16 << 20]
    progress(f"{SCENARIO}: sizes {sizes} float32, every op of the op table")
    # the targets: >= 64 MB per operand on the CPU, >= 256 MB on the GPU (quick: the largest size)
    big_threshold = sizes[-1] if ctx.quick else ((64 << 20) if cuda else (16 << 20))
    worst: Dict[Tuple[str, str], Tuple[float, str]] = {}
    worst_twin: Dict[Tuple[str, str], Tuple[float, str]] = {}
    contended_sizes = []
    for n in sizes:
        reps = 9 if n >= (1 << 20) else 40
        contended = False
        if ctx.device == "cpu" and torch.get_num_threads() > 1:
            # another process holding a core makes multi-threaded mid-size timings scheduler-bound: wait a
            # little for it to pass (up to ~6 s), else measure anyway and say so
            for _ in range(4):
                contended = contention_probe(torch.get_num_threads())["contended"]
                if not contended:
                    break
                progress(f"  {n} elements: machine busy (contention probe), waiting 2 s ...")
                time.sleep(2)
            if contended:
                contended_sizes.append(n)
        ref: Dict[str, float] = {}
        groups = [("stream", stream_cases(n, ctx.device)), ("fwd", fwd_cases(n, ctx.device, ctx.full)),
                  ("bwd", bwd_cases(n, ctx.device))]
        cases = {(mode, name): (cls, passes, fn) for mode, cs in groups for name, cls, passes, fn in cs}
        for _, _, fn in cases.values():  # warm-up
            fn()
        # all cases of this size round-robin: the references and the ops see the same machine state
        stats = time_interleaved({k: v[2] for k, v in cases.items()}, device=ctx.device, reps=reps,
                                 max_time_s=1.0)
        for (mode, name), (cls, passes, _) in cases.items():
            if mode == "stream":
                ref[cls] = max(ref.get(cls, 0.0), gbps(passes * n * 4, stats[(mode, name)].median))
        for (mode, name), (cls, passes, _) in cases.items():
            st = stats[(mode, name)]
            bw = gbps(passes * n * 4, st.median)
            pct = None if mode == "stream" else 100.0 * bw / ref[cls]
            twin = TORCH_TWIN.get(name)
            vs_torch = None
            if twin and (mode, twin) in stats:
                vs_torch = stats[(mode, twin)].median / st.median  # > 1: safe_ops faster than torch's op
            ctx.record(SCENARIO, name, mode, time=st, gbps=bw, params={"n": n, "buffer": cls},
                       kind="roofline", passes=passes, pct_of_best=pct, ref_gbps=ref.get(cls),
                       speed_vs_torch=vs_torch, contended=contended)
            if vs_torch is not None and n >= big_threshold:
                key = (mode, cls)
                if key not in worst_twin or vs_torch < worst_twin[key][0]:
                    worst_twin[key] = (vs_torch, f"{name} {vs_torch:.2f}× the speed of {twin}")
            if pct is not None and name.startswith("safe_ops") and n >= big_threshold:
                key = (mode, cls)
                if key not in worst or pct < worst[key][0]:
                    size = f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}K"
                    worst[key] = (pct, f"{name} at {size} elements")
        del groups, cases, stats
    labels = {("fwd", "existing"): "forward into an existing buffer (in-place variants) vs copy_/add(out=)",
              ("fwd", "alloc"): "forward allocating the result (functional ops) vs clone()/torch.add",
              ("bwd", "alloc"): "backward (autograd allocates the grads) vs clone()/torch.add"}
    for key, label in labels.items():
        if key in worst:
            pct, where = worst[key]
            mb = big_threshold * 4 >> 20
            twin = worst_twin.get(key)
            ctx.target(f"roofline-{key[0]}-{key[1]}", f"roofline ≥ {mb} MB, {label}: worst safe_ops kernel",
                       pct / 100.0, 0.9, detail=f"worst: {where}" + (
                           f"; slowest against torch's own op: {twin[1]}" if twin else ""))


if __name__ == "__main__":
    main_for(run, "roofline")
