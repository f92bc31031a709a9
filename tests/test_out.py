"""out= mirrors torch's out= variants: each case runs against torch's own op with the same out tensor."""
import warnings

import pytest
import torch

import safe_ops

from op_table import DECLARED, OP_TABLE, op_checks, ops_with

NAMES = [info.name for info in ops_with("out_args")]
NUMBER_INPUT = [info.name for info in OP_TABLE if DECLARED[info.name].number_input]


def _args(name):
    a, b, c = torch.randn(3, 4), torch.randn(4), torch.rand(3, 4) + 0.5
    return next(info for info in OP_TABLE if info.name == name).out_args(a, b, c)


def _both(name, make_out, args, kwargs):
    """(safe_ops result, out, warnings) and torch's, or the exception types each raised."""
    runs = []
    for op in (getattr(safe_ops, name), getattr(torch, name)):
        out = make_out()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = op(*args, **kwargs, out=out)
            except RuntimeError as error:
                runs.append(type(error))
                continue
        runs.append((result is out, out, [str(w.message)[:40] for w in caught if w.category is UserWarning]))
    return runs


OUTS = {
    "matching": lambda: torch.empty(3, 4),
    "empty (resized)": lambda: torch.empty(0),
    "wrong shape (resized, warns)": lambda: torch.empty(5),
    "wider dtype (cast)": lambda: torch.empty(3, 4, dtype=torch.float64),
    "narrower dtype (cast)": lambda: torch.empty(3, 4, dtype=torch.float16),
    "integer (can't cast)": lambda: torch.empty(3, 4, dtype=torch.int64),
    "non-contiguous": lambda: torch.empty(4, 3).t(),
}


@pytest.mark.parametrize("out_kind", OUTS)
@pytest.mark.parametrize("name", NAMES)
def test_out_like_torch(name, out_kind):
    args, kwargs = _args(name)
    got, want = _both(name, OUTS[out_kind], args, kwargs)
    if not isinstance(want, tuple):
        assert got is want
        return
    (is_out, out, warned), (ris_out, rout, rwarned) = got, want
    assert is_out and ris_out
    assert out.dtype == rout.dtype and out.shape == rout.shape and out.stride() == rout.stride()
    assert warned == rwarned
    torch.testing.assert_close(out, rout, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_out_with_autograd_raises_like_torch(name):
    args, kwargs = _args(name)
    args = (args[0].clone().requires_grad_(),) + args[1:]
    for op in (getattr(torch, name), getattr(safe_ops, name)):
        with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
            op(*args, **kwargs, out=torch.empty(3, 4))
    with torch.no_grad():  # no graph: allowed
        assert torch.equal(getattr(safe_ops, name)(*args, **kwargs, out=torch.empty(3, 4)),
                           getattr(torch, name)(*args, **kwargs))


@pytest.mark.parametrize("name", NAMES)
def test_out_aliasing_the_first_input_like_torch(name):
    args, kwargs = _args(name)
    want = getattr(torch, name)(args[0].clone(), *args[1:], **kwargs)
    x = args[0].clone()
    assert getattr(safe_ops, name)(x, *args[1:], **kwargs, out=x) is x and torch.equal(x, want)


@pytest.mark.parametrize("check", op_checks("out"))
def test_op_specific(check):
    check()


@pytest.mark.parametrize("name", NUMBER_INPUT)
@pytest.mark.parametrize("number, other", [(2, torch.ones(3)), (2.5, torch.arange(3, dtype=torch.int32)), (2, 3),
                                           (2.5, 3), (2, torch.tensor(3, dtype=torch.int32)), (1j, torch.ones(2))])
def test_number_as_first_argument_like_torch(name, number, other):
    want = getattr(torch, name)(number, other, alpha=2)
    got = getattr(safe_ops, name)(number, other, alpha=2)
    assert got.dtype == want.dtype and torch.equal(got, want)
