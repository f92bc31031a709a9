"""Bad input: the error type torch raises for the same mistake, and every input left unchanged (the in-place
variants included)."""
import pytest
import torch

import safe_ops


def _snapshot(tensors):
    return [(t, t.detach().clone(), t._version) for t in tensors]


def _unchanged(snapshot):
    return all(torch.equal(t.detach(), copy) and t._version == version for t, copy, version in snapshot)


a34, b5 = torch.randn(3, 4), torch.randn(5)
ints = torch.arange(4)
cplx = torch.randn(4, dtype=torch.complex64)

CASES = [
    # (description, call, tensors that must stay unchanged, expected exception, torch's own error for the mistake)
    ("add shapes don't broadcast", lambda: safe_ops.add(a34, b5), [a34, b5], RuntimeError, lambda: torch.add(a34, b5)),
    ("add_ shapes don't broadcast", lambda: safe_ops.add_(a34, b5), [a34, b5], RuntimeError, lambda: torch.add(a34, b5)),
    ("sub shapes", lambda: safe_ops.sub(b5, a34), [a34, b5], RuntimeError, lambda: torch.sub(b5, a34)),
    ("addcmul shapes", lambda: safe_ops.addcmul(a34, a34, b5), [a34, b5], RuntimeError,
     lambda: torch.addcmul(a34, a34, b5)),
    ("addcmul_ shapes", lambda: safe_ops.addcmul_(a34, a34, b5), [a34, b5], RuntimeError,
     lambda: torch.addcmul(a34, a34, b5)),
    ("lerp shapes", lambda: safe_ops.lerp(a34, b5, 0.5), [a34, b5], RuntimeError, lambda: torch.lerp(a34, b5, 0.5)),
    ("lerp_ shapes", lambda: safe_ops.lerp_(a34, b5, 0.5), [a34, b5], RuntimeError, lambda: torch.lerp(a34, b5, 0.5)),
    ("lerp dtype mismatch", lambda: safe_ops.lerp(a34, a34.double(), 0.5), [a34], RuntimeError,
     lambda: torch.lerp(a34, a34.double(), 0.5)),
    ("accumulate shapes", lambda: safe_ops.accumulate([a34, b5]), [a34, b5], RuntimeError, lambda: a34 + b5),
    ("accumulate_ shapes", lambda: safe_ops.accumulate_(a34, [a34.clone(), b5]), [a34, b5], RuntimeError,
     lambda: a34 + b5),
    ("accumulate empty list", lambda: safe_ops.accumulate([]), [], RuntimeError, lambda: torch.stack([])),
    ("accumulate_ empty list", lambda: safe_ops.accumulate_(a34, []), [a34], RuntimeError, lambda: torch.stack([])),
    ("accumulate len(weights) != K", lambda: safe_ops.accumulate([b5, b5], [1.0]), [b5], RuntimeError,
     lambda: torch._foreach_mul([b5, b5], [1.0])),
    ("accumulate_ len(weights) != K", lambda: safe_ops.accumulate_(b5, [b5.clone()], [1.0, 2.0]), [b5],
     RuntimeError, lambda: torch._foreach_mul([b5], [1.0, 2.0])),
    ("accumulate weights tensor wrong length", lambda: safe_ops.accumulate([b5, b5], torch.ones(3)), [b5],
     RuntimeError, None),
    ("integer result dtype", lambda: safe_ops.add(ints, ints), [ints], TypeError, None),
    ("integer accumulate_", lambda: safe_ops.accumulate_(ints, [ints]), [ints], TypeError, None),
    ("complex result dtype", lambda: safe_ops.add(cplx, cplx), [cplx], TypeError, None),
    ("complex lerp_", lambda: safe_ops.lerp_(cplx, cplx, 0.5), [cplx], TypeError, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_like_torch_and_changes_nothing(case):
    desc, call, tensors, exc, torch_call = case
    snapshot = _snapshot(tensors)
    with pytest.raises(exc):
        call()
    assert _unchanged(snapshot), desc
    if torch_call is not None:  # the same mistake in torch raises the same type
        with pytest.raises(exc):
            torch_call()


def test_unsupported_dtype_message_names_the_dtype_and_the_way_out():
    with pytest.raises(TypeError, match=r"Long.*Use the torch op"):
        safe_ops.add(ints, ints)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_devices():
    cpu, gpu = torch.randn(4), torch.randn(4, device="cuda")
    snapshot = _snapshot([cpu, gpu])
    for call in (lambda: safe_ops.add(cpu, gpu), lambda: safe_ops.add_(cpu, gpu),
                 lambda: safe_ops.accumulate([gpu, cpu]), lambda: safe_ops.lerp(gpu, cpu, 0.5)):
        with pytest.raises(RuntimeError):
            call()
    assert _unchanged(snapshot)
    with pytest.raises(RuntimeError):
        torch.add(cpu, gpu)
