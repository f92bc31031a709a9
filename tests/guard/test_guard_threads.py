"""Nesting, threads, errors, torch.compile, CUDA, and safe_ops' own in-place ops under the guard."""
import threading
import warnings

import pytest
import torch
from guard_helpers import leaf, live_records
from hazard_catalogue import sigmoid_out_mul_

import safe_ops
from safe_ops import InplaceHazardError


def test_nested_guards_innermost_mode_wins_and_stats_add_up():
    x = leaf(3, 4)
    with safe_ops.guard("copy") as outer:
        y = x.sigmoid()
        with pytest.raises(InplaceHazardError):
            with safe_ops.guard("raise") as inner:
                y.mul_(2)
        y.mul_(2)  # the outer guard copies
        z = x.exp()
        with safe_ops.guard("copy") as inner2:
            z.add_(1)
    (y.sum() + z.sum()).backward()
    s = x.detach().sigmoid()
    torch.testing.assert_close(x.grad, 2 * s * (1 - s) + x.detach().exp())
    assert inner.stats.hazards == 1 and inner.stats.copies == 0
    assert inner2.stats.copies == 1 and outer.stats.copies == 2 and outer.stats.hazards == 3


def test_guard_cannot_be_reentered_and_rejects_unknown_modes():
    g = safe_ops.guard()
    with g:
        with pytest.raises(RuntimeError, match="already active"):
            g.__enter__()
    with pytest.raises(ValueError, match="mode"):
        safe_ops.guard("ignore")


def test_exception_inside_guard_uninstalls_it():
    with pytest.raises(ZeroDivisionError):
        with safe_ops.guard():
            _ = 1 / 0
    # the autouse fixture checks that no mode or hooks are left behind


def test_state_is_per_thread():
    """A guard in one thread neither checks nor records another thread's ops."""
    entered, done = threading.Event(), threading.Event()
    errors = []

    def guarded():
        with safe_ops.guard():
            entered.set()
            done.wait(10)

    def unguarded():
        try:
            entered.wait(10)
            x = leaf(3, 4)
            y = x.sigmoid()
            y.mul_(2)  # not checked here: PyTorch's own check still applies at backward
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()
            assert live_records() == 0
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    threads = [threading.Thread(target=guarded), threading.Thread(target=unguarded)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors


def test_threads_each_with_their_own_guard():
    results = {}

    def worker(index, mode):
        try:
            with safe_ops.guard(mode) as g:
                for _ in range(20):
                    x = leaf(3, 4, seed=index)
                    if mode == "raise":
                        with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
                            sigmoid_out_mul_(x)
                    else:
                        loss = sigmoid_out_mul_(x)
                        loss.backward()
                        s = x.detach().sigmoid()
                        torch.testing.assert_close(x.grad, 2 * s * (1 - s))
            results[index] = g.stats
        except BaseException as error:  # pragma: no cover - reported below
            results[index] = error

    modes = ["raise", "copy", "raise", "copy"]
    threads = [threading.Thread(target=worker, args=(i, m)) for i, m in enumerate(modes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, mode in enumerate(modes):
        stats = results[i]
        assert isinstance(stats, safe_ops.guard.GuardStats), stats
        assert stats.hazards == 20 and stats.copies == (20 if mode == "copy" else 0)


def test_write_from_another_guarded_thread_into_a_saved_tensor():
    """Records are shared: a guarded thread's write into a tensor another thread's graph saved is caught."""
    x = leaf(3, 4)
    with safe_ops.guard():
        y = x.sigmoid()
    caught = []

    def writer():
        with safe_ops.guard():
            try:
                y.mul_(2)
            except InplaceHazardError as error:
                caught.append(error)

    t = threading.Thread(target=writer)
    t.start()
    t.join(10)
    assert caught and "SigmoidBackward0" in str(caught[0])
    y.sum().backward()


def test_compile_says_once_that_compiled_regions_are_not_checked():
    def f(x):
        return (x.sigmoid() * x).sum()

    compiled = torch.compile(f, backend="aot_eager")
    x = leaf(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with safe_ops.guard():
            loss = compiled(x) + compiled(x)
    loss.backward()
    xr = leaf(3, 4)
    (2 * f(xr)).backward()
    torch.testing.assert_close(x.grad, xr.grad)
    said = [w for w in caught if "regions are not checked" in str(w.message)]
    compiled_ran = loss.grad_fn is not None and any(
        "CompiledFunction" in (n.name() if n is not None else "") for n, _ in loss.grad_fn.next_functions)
    if compiled_ran:
        assert len(said) == 1
    else:  # a torch whose dynamo skips frames under a dispatch mode runs f eagerly, and checks it
        assert not said


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_raise_copy_and_backward_on_the_device_thread():
    x = torch.rand(64, 32, device="cuda", requires_grad=True)
    with pytest.raises(InplaceHazardError, match="SigmoidBackward0"):
        with safe_ops.guard():
            y = x.sigmoid()
            y[3:5].mul_(2)
    with safe_ops.guard("copy") as g:
        y = x.sigmoid()
        y[3:5].mul_(2)
        y.sum().backward()  # CUDA backward runs on autograd's device thread, inside the guard
    s = x.detach().sigmoid()
    scale = torch.ones_like(s)
    scale[3:5] = 2
    torch.testing.assert_close(x.grad, scale * s * (1 - s))
    assert g.stats.copies == 1 and g.stats.bytes == 64 * 32 * 4
    assert live_records() == 0


def test_safe_add_stays_in_place_under_the_guard_and_copies_a_saved_value():
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)
    with safe_ops.guard("raise"):
        total = torch.zeros(8, dtype=torch.float64)
        ptr = total.data_ptr()
        for i in range(4):
            total = safe_ops.add_(total, x, alpha=i)
        assert total.data_ptr() == ptr  # the guard's hooks alone do not force copies
        y = x.sigmoid()
        z = safe_ops.add_(y, 1.0)  # sigmoid saved y: still a copy, and no alarm
        assert z is not y
        (total.sum() + (z * y).sum()).backward()
    expected = 6 + (y.detach() * (1 - y.detach())) * (2 * y.detach() + 1)
    torch.testing.assert_close(x.grad, expected)
