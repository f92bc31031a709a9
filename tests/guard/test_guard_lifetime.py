"""Records die with their graph: after backward, when a graph is dropped, over 10000 steps."""

from guard_helpers import XW, leaf, live_records

import safe_ops
from safe_ops.guard import _records


def test_records_released_over_10000_steps():
    import tracemalloc

    x = leaf(8)
    w = leaf(8, seed=3)
    peak_records = 0
    tracemalloc.start()
    try:
        for step in range(10_000):
            with safe_ops.guard():
                loss = ((x * w).sigmoid() * x).sum()
            peak_records = max(peak_records, safe_ops.guard.live_records())
            loss.backward()
            if step == 100:
                base, _ = tracemalloc.get_traced_memory()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_records <= 5  # x*w saves 2, sigmoid 1, *x 2
    assert live_records() == 0
    assert not _records._live
    assert end - base < 256 * 1024, f"python memory grew by {end - base} bytes"


def test_records_released_when_graph_dropped_without_backward():
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.exp() * x.sigmoid()
        assert safe_ops.guard.live_records() >= 2
    del y
    assert live_records() == 0


def test_nothing_copied_when_nothing_written():
    x, w = XW()
    with safe_ops.guard("copy") as g:
        loss = ((x * w).sigmoid() @ w.t()).exp().sum()
    loss.backward()
    assert g.stats.saved >= 4 and g.stats.copies == 0 and g.stats.bytes == 0
