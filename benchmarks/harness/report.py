"""Report: a results dict (what Context.save writes as JSON) as the markdown table and the PNG plot.

``write(data, base)`` writes both beside the JSON; ``python benchmarks/report.py benchmarks/results/<machine>.json``
regenerates them from a JSON file. matplotlib is imported only when a plot is drawn.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .fmt import fmt_bytes, fmt_time
from .log import progress


def _status(t: Dict[str, Any]) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[t["met"]]


def _want(t: Dict[str, Any]) -> str:
    return ("≥ " if t["higher_is_better"] else "≤ ") + f"{t['threshold']:g}×"


def _params(p: Dict[str, Any]) -> str:
    out = []
    for k, v in p.items():
        if k == "n" and isinstance(v, int):
            v = f"{v >> 20}M" if v >= 1 << 20 and v % (1 << 20) == 0 else (
                f"{v >> 10}K" if v >= 1024 and v % 1024 == 0 else v)
        out.append(f"{k}={v}")
    return " ".join(out)


def by_scenario(records: List[Dict[str, Any]]) -> "OrderedDict[str, List[Dict[str, Any]]]":
    groups: "OrderedDict[str, List[Dict[str, Any]]]" = OrderedDict()
    for r in records:
        groups.setdefault(r["scenario"], []).append(r)
    return groups


def markdown(data: Dict[str, Any]) -> str:
    m = data["machine"]
    bw = data.get("bandwidth") or {}
    lines = [f"# safe_ops benchmarks: {data['name']}", ""]
    dev = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    lines.append(f"{dev}; torch {m['torch']}, Python {m['python']}; {data['started']}, "
                 f"{'--all' if data.get('full') else 'default subset'}{' --quick' if data.get('quick') else ''}, "
                 f"{data['duration_s']:.0f} s.")
    if bw:
        lines.append(f"Streaming bandwidth this run ({fmt_bytes(bw['bytes'])} float32 buffers): "
                     f"`copy_` {bw['copy_']:.1f} GB/s, `torch.add(a, b, out=c)` {bw['add_out']:.1f} GB/s.")
    c = bw.get("contention") if bw else None
    if c:
        lines.append(f"Contention probe (`copy_` of 4 MB): {c['copy_4MB_all_threads']:.1f} GB/s with {m['threads']} "
                     f"threads, {c['copy_4MB_one_thread']:.1f} GB/s with one"
                     + (" — **the machine was busy** (another process held a core: multi-threaded timings of "
                        "mid-size tensors measure scheduler time slices; ratios from the round-robin timing are "
                        "still comparable)." if c["contended"] else "."))
    la = m.get("loadavg_at_start")
    if la:
        lines.append(f"Load average at start: {la[0]:.2f}" + (
            f", at end: {m['loadavg_at_end'][0]:.2f}." if m.get("loadavg_at_end") else "."))
    lines += ["", "Times are medians of repetitions (IQR = interquartile range / median); peak = memory a call "
              "allocates above its live inputs (CPU: peak-RSS rise of a fresh subprocess; CUDA: "
              "`max_memory_allocated`); ratios are from this one run.", ""]
    for e in data.get("errors") or []:
        lines += [f"**Scenario {e['scenario']} failed:** `{e['error']}`", ""]
    if data.get("targets"):
        lines += ["## Targets", "", "| target | measured | want | status | detail |", "|---|---:|---:|---|---|"]
        for t in data["targets"]:
            meas = "n/a" if t["measured"] is None else f"{t['measured']:.2f}×"
            lines.append(f"| {t['description']} | {meas} | {_want(t)} | {_status(t)} | {t.get('detail', '')} |")
        met = sum(1 for t in data["targets"] if t["met"] is True)
        lines += ["", f"{met} of {len(data['targets'])} targets met.", ""]
    for scen, recs in by_scenario(data["records"]).items():
        lines += [f"## {scen}", ""]
        if any(r.get("kind") == "roofline" for r in recs):
            lines += _roofline_table(recs, bw)
            continue
        show_peak = any(r.get("peak_bytes") is not None for r in recs)
        show_saved = any(r.get("saved_bytes") is not None for r in recs)
        show_bw = any(r.get("gbps") is not None for r in recs)
        show_extra = any(r.get("compile_s") is not None or r.get("ref") for r in recs)
        head = ["method", "mode", "params", "median", "IQR"]
        if show_peak:
            head.append("peak mem")
        show_saved_a = any(r.get("saved_bytes_a_only") is not None for r in recs)
        if show_saved:
            head.append("saved for bwd")
        if show_saved_a:
            head.append("saved, only a needs grad")
        if show_bw:
            head.append("GB/s")
        if show_extra:
            head.append("time ÷ reference (same mode)")
        extras = _extra_keys(recs)
        head += [k.replace("_", " ") for k in extras]
        head.append("note")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" if h in ("method", "mode", "params", "note") else "---:"
                                     for h in head) + "|")
        for r in recs:
            t = r.get("time") or {}
            row = [f"`{r['method']}`", r["mode"], _params(r.get("params", {})), fmt_time(t.get("median")),
                   f"{100 * (t['q3'] - t['q1']) / t['median']:.0f}%" if t else "-"]
            if show_peak:
                row.append(fmt_bytes(r.get("peak_bytes")))
            if show_saved:
                row.append(fmt_bytes(r.get("saved_bytes")))
            if show_saved_a:
                row.append(fmt_bytes(r.get("saved_bytes_a_only")))
            if show_bw:
                row.append(f"{r['gbps']:.1f}" if r.get("gbps") is not None else "-")
            if show_extra:
                bits = []
                ref = _find(recs, r.get("ref"), r["mode"], r.get("params", {}))
                if ref is not None and ref.get("time") and t:
                    if ref is r:
                        bits.append("1.00 (reference)")
                    else:
                        bits.append(f"{t['median'] / ref['time']['median']:.2f}× `{r['ref']}`")
                if r.get("compile_s") is not None:
                    bits.append(f"compile {r['compile_s']:.1f} s")
                row.append("; ".join(bits) or "-")
            row += [_fmt_extra(k, r.get(k)) for k in extras]
            row.append(r.get("note", ""))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


# record fields the table shows in its own columns or not at all; any other number/bool a scenario records
# (e.g. bench_guard's bytes_copied, vs_torch) gets a column of its own
_KNOWN = {"scenario", "method", "mode", "params", "time", "peak_bytes", "saved_bytes", "gbps", "note",
          "first_call_s", "compile_s", "ref", "kind", "passes", "pct_of_best", "ref_gbps", "speed_vs_torch",
          "contended", "saved_bytes_a_only", "label_suffix", "torch_equivalent", "vs_torch_add",
          "vs_torch_equivalent"}


def _extra_keys(recs):
    keys = []
    for r in recs:
        for k, v in r.items():
            if k not in _KNOWN and k not in keys and isinstance(v, (int, float, bool)) and v is not None:
                keys.append(k)
    return keys


def _fmt_extra(key, v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if "bytes" in key:
        return fmt_bytes(v)
    if isinstance(v, float):
        return f"{v:.2f}" if key.startswith("vs") or abs(v) >= 0.01 else f"{v:.3g}"
    return str(v)


def _find(recs, method, mode, params):
    if not method:
        return None
    for r in recs:
        if r["method"] == method and r["mode"] == mode and r.get("params", {}) == params:
            return r
    return None


def _roofline_table(recs: List[Dict[str, Any]], bw: Dict[str, Any]) -> List[str]:
    sizes = sorted({r["params"]["n"] for r in recs})
    rows: "OrderedDict[tuple, Dict[int, Dict[str, Any]]]" = OrderedDict()
    for r in recs:
        rows.setdefault((r["method"], r["mode"]), {})[r["params"]["n"]] = r
    out = ["GB/s achieved (bytes the op must move / median time); in parentheses, % of the best streaming "
           "bandwidth of the same class measured at the same size in this run (\"existing\": into a preallocated "
           "buffer, against `copy_`/`add(out=)`; \"alloc\": allocating the result, against `clone()`/`torch.add`); "
           "in square brackets, the speed relative to torch's own op doing the same work (> 1: safe_ops faster). "
           "Bytes count each operand read once and each result written once; an in-place update reads and writes "
           "the same lines, so it can exceed `copy_`, whose destination is read for ownership first. A size marked "
           "(busy) was measured while another process held a core (contention probe): its multi-threaded "
           "times are scheduler-bound.", "",
           "| op | mode | " + " | ".join(_params({"n": n}).split("=")[1]
                                          + (" (busy)" if any(r.get("contended") for r in recs
                                                              if r["params"]["n"] == n) else "")
                                          for n in sizes) + " |",
           "|---|---|" + "---:|" * len(sizes)]
    for (method, mode), per in rows.items():
        cells = []
        for n in sizes:
            r = per.get(n)
            if r is None or r.get("gbps") is None:
                cells.append("-")
            else:
                pct = r.get("pct_of_best")
                vt = r.get("speed_vs_torch")
                cells.append(f"{r['gbps']:.1f}" + (f" ({pct:.0f}%)" if pct is not None else "")
                             + (f" [{vt:.2f}×]" if vt is not None else ""))
        out.append(f"| `{method}` | {mode} | " + " | ".join(cells) + " |")
    out.append("")
    return out


# ------------------------------------------------------------------------------------------------- plot
COLORS = {"fwd": "#4C72B0", "fwd+bwd": "#DD8452", "step": "#55A868", "grad": "#DD8452", "no grad": "#4C72B0"}


def _bars(ax, recs, value, unit, title, ref_line=None):
    """Horizontal grouped bars: one group per method, one bar per mode, each labelled with its value."""
    order = list(OrderedDict.fromkeys(_label(r) for r in recs))  # the time panel's order, kept by the others
    recs = [r for r in recs if value(r) is not None]
    methods = [m for m in order if any(_label(r) == m for r in recs)]
    modes = list(OrderedDict.fromkeys(r["mode"] for r in recs))
    width = 0.8 / max(1, len(modes))
    top = 0.0
    for j, mode in enumerate(modes):
        ys, vs = [], []
        for i, m in enumerate(methods):
            r = next((x for x in recs if _label(x) == m and x["mode"] == mode), None)
            v = value(r) if r is not None else None
            if v is None:
                continue
            ys.append(i + j * width)
            vs.append(v)
        if not vs:
            continue
        top = max(top, max(vs))
        ax.barh(ys, vs, height=width, color=COLORS.get(mode), label=mode)
        for y, v in zip(ys, vs):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=6)
    ax.set_yticks([i + width * (len(modes) - 1) / 2 for i in range(len(methods))])
    ax.set_yticklabels(methods, fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    allv = [p.get_width() for p in ax.patches if p.get_width() > 0]
    if allv and max(allv) / min(allv) > 200:  # values over orders of magnitude: log scale
        ax.set_xscale("log")
        ax.set_xlim(min(allv) / 2, max(allv) * 3)
    else:
        ax.set_xlim(0, top * 1.18 if top > 0 else 1)
    ax.set_xlabel(unit, fontsize=7)
    ax.set_title(title, fontsize=9, loc="left")
    if ref_line is not None:
        ax.axvline(ref_line, color="red", lw=1, ls="--")
    if len(modes) > 1:
        ax.legend(fontsize=6, loc="lower right")


class _Point(NamedTuple):
    """One point of a roofline curve."""

    nbytes: int  # bytes per operand
    gbps: float


def _roofline_panel(ax, recs, mode, cls, title):
    series: "OrderedDict[str, List[_Point]]" = OrderedDict()
    for r in recs:
        rc = r["params"].get("buffer", "")
        if rc != cls or (r["mode"] != mode and r["mode"] != "stream"):
            continue
        series.setdefault(r["method"], []).append(_Point(r["params"]["n"] * 4, r.get("gbps") or 0))
    for name, pts in series.items():
        pts.sort()
        stream = any(r["method"] == name and r["mode"] == "stream" for r in recs)
        torch_op = name.startswith(("torch", "Tensor")) and not stream
        ax.plot([p.nbytes for p in pts], [p.gbps for p in pts], ":" if stream else ("--" if torch_op else "-"),
                marker="o", ms=3, label=name, lw=2.2 if stream else 1.2, color="black" if stream else None,
                alpha=0.6 if stream else 1.0)
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_bytes(v).replace(".0 ", " ")))
    ax.set_xlabel("bytes per operand (float32)", fontsize=7)
    ax.set_ylabel("GB/s", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


class _PlotRow(NamedTuple):
    """One row of the figure: its height in inches and its two panels' painters (None: an empty panel)."""

    height: float
    painters: List[Optional[Callable[[Any], None]]]


def plot(data: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: List[_PlotRow] = []
    for scen, recs in by_scenario(data["records"]).items():
        if any(x.get("kind") == "roofline" for x in recs):
            rows.append(_PlotRow(3.6, [lambda ax, recs=recs, scen=scen: _roofline_panel(
                                           ax, recs, "fwd", "existing", f"{scen}: forward into an existing buffer"),
                                       lambda ax, recs=recs, scen=scen: _roofline_panel(
                                           ax, recs, "fwd", "alloc", f"{scen}: forward allocating the result")]))
            rows.append(_PlotRow(3.6, [lambda ax, recs=recs, scen=scen: _roofline_panel(
                                           ax, recs, "bwd", "alloc", f"{scen}: backward (gradients allocated)"),
                                       None]))
            continue
        timed = [r for r in recs if r.get("time")]
        if not timed:
            continue
        nm = len({r["method"] for r in timed})
        nmodes = len({r["mode"] for r in timed})
        h = max(1.6, 0.16 * nm * nmodes + 0.9)
        ms = all(r["time"]["median"] >= 1e-3 for r in timed)
        scale, unit = (1e3, "ms (median)") if ms else (1e6, "µs per call (median)")
        left = (lambda ax, recs=recs, scen=scen, scale=scale, unit=unit: _bars(
            ax, recs, lambda r: r["time"]["median"] * scale if r.get("time") else None, unit, f"{scen}: time"))
        if any(r.get("peak_bytes") is not None for r in recs):
            right = (lambda ax, recs=recs, scen=scen: _bars(
                ax, recs, _peak_mib, "MiB", f"{scen}: peak memory above inputs"))
        elif any(r.get("vs_torch_add") is not None for r in recs):
            right = (lambda ax, recs=recs, scen=scen: _bars(
                ax, recs, lambda r: r.get("vs_torch_add"), "× torch.add (target ≤ 1.5×, red line)",
                f"{scen}: time / torch.add", ref_line=1.5))
        else:
            right = None
        rows.append(_PlotRow(h, [left, right]))
    if not rows:
        return
    total_h = sum(row.height for row in rows) + 0.8
    fig, axes = plt.subplots(len(rows), 2, figsize=(15, total_h),
                             gridspec_kw={"height_ratios": [row.height for row in rows]}, squeeze=False)
    for i, row in enumerate(rows):
        for j, paint in enumerate(row.painters):
            if paint is None:
                axes[i][j].axis("off")
            else:
                paint(axes[i][j])
    m = data["machine"]
    dev = m.get("gpu") or f"{m['cpu']} ({m['threads']} threads)"
    bw = data.get("bandwidth") or {}
    sub = f"; copy_ {bw['copy_']:.0f} GB/s, add(out=) {bw['add_out']:.0f} GB/s" if bw else ""
    fig.suptitle(f"safe_ops benchmarks — {dev}, torch {m['torch']}{sub}", fontsize=12, y=1 - 0.15 / total_h)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / total_h))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _peak_mib(r: Dict[str, Any]) -> Optional[float]:
    """A record's peak in MiB; None when not measured or when the measuring child failed (-1)."""
    peak = r.get("peak_bytes")
    return peak / 2 ** 20 if peak is not None and peak >= 0 else None


def _label(r: Dict[str, Any]) -> str:
    extra = r.get("label_suffix") or ""
    return r["method"] + extra


def write(data: Dict[str, Any], base: str) -> List[str]:
    """Write ``base.md`` (the table) and ``base.png`` (the plot; a failed plot is reported, not raised)."""
    with open(base + ".md", "w") as f:
        f.write(markdown(data))
    paths = [base + ".md"]
    try:
        plot(data, base + ".png")
        paths.append(base + ".png")
    except Exception as e:  # noqa: BLE001
        progress(f"plot failed: {type(e).__name__}: {e}")
    return paths
