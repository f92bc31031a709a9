"""Bad input: the error type torch raises for the same mistake, and every input left unchanged (the in-place
variants included). The mistakes are the op table's error inputs."""
import pytest
import torch

import safe_ops

from op_table import OP_TABLE

CASES = [(info, case) for info in OP_TABLE for case in info.error_inputs()]


def _snapshot(tensors):
    return [(t, t.detach().clone(), t._version) for t in tensors]


def _unchanged(snapshot):
    return all(torch.equal(t.detach(), copy) and t._version == version for t, copy, version in snapshot)


def _tensors(args):
    found = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found += [t for t in a if isinstance(t, torch.Tensor)]
    return found


@pytest.mark.parametrize("info, case", CASES, ids=[case.desc for _, case in CASES])
def test_bad_input_raises_like_torch_and_changes_nothing(info, case):
    call = info.op if case.variant == "op" else info.inplace
    snapshot = _snapshot(_tensors(case.args))
    with pytest.raises(case.error):
        call(*case.args, **case.kwargs)
    assert _unchanged(snapshot), case.desc
    if case.torch_call is not None:  # the same mistake in torch raises the same type
        with pytest.raises(case.error):
            case.torch_call()


def test_every_op_has_error_inputs_for_itself_and_its_inplace_variant():
    for info in OP_TABLE:
        variants = {case.variant for case in info.error_inputs()}
        assert variants == {"op", "inplace"}, info.name


def test_unsupported_dtype_message_names_the_dtype_and_the_way_out():
    # accumulate has no torch twin to compute integer results (add and the others do: csrc/core/twin.h)
    ints = torch.arange(4)
    with pytest.raises(TypeError, match=r"Long.*Use the torch op"):
        safe_ops.accumulate([ints, ints])


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
