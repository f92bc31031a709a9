"""In-place-when-safe: the hazard catalogue (never an error, never a wrong gradient, copy where a write would
be unsafe), the positive list (written in place), the seed examples, the no_grad Parameter rules, threads."""
import threading

import pytest
import torch

import safe_ops
from safe_ops import Decision, InplaceHazardError

from op_table import inplace_variants

# Each variant updates `t` with operand `o`: the safe_ops in-place-when-safe call and its out-of-place torch
# reference (what the result must equal, values and gradients), one per op of the op table.
VARIANTS = inplace_variants()


def _leaf(*shape, requires_grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


# ---- hazards: the update must copy (or, for a shape/dtype change, necessarily return a new tensor) ----------
# Each pattern: (update) -> (loss, leaves, target, result); built twice with the same seed, once with the
# safe_ops update and once with the out-of-place torch reference.


def sigmoid_output(update):
    x = _leaf(5)
    y = x.sigmoid()  # SigmoidBackward saves its output
    z = update(y, x.detach() * 0 + 1)
    return (z * y).sum(), [x], y, z


def _unary_output(fn):
    def pattern(update):
        x = _leaf(5)
        y = fn(x)
        z = update(y, torch.ones(5, dtype=torch.float64))
        return (z * 2 + y).sum(), [x], y, z

    return pattern


def saved_input_of_mul(update):
    x, w = _leaf(5), _leaf(5)
    a = x * 2  # MulBackward(by a number) saves nothing...
    y = a * w  # ...but this mul saves a (for w's gradient)
    z = update(a, w)
    return (y + z).sum(), [x, w], a, z


def saved_input_of_matmul(update):
    x, w = _leaf(3, 4), _leaf(4, 2)
    a = x + 1
    y = a @ w  # saves a
    z = update(a, torch.ones(3, 4, dtype=torch.float64))
    return y.sum() + (z * z).sum(), [x, w], a, z


def saved_denominator_of_div(update):
    x, d = _leaf(5), _leaf(5)
    den = d * d + 1
    y = x / den  # saves den
    z = update(den, x)
    return (y * z).sum(), [x, d], den, z


def base_of_saved_view(update):
    x, w = _leaf(6), _leaf(3)
    a = x * 3
    y = a[:3] * w  # saves the view a[:3], which shares a's memory
    z = update(a, x)
    return (y.sum() + z.sum()), [x, w], a, z


def unbind_output(update):
    x = _leaf(3, 4)
    parts = (x * 2).unbind(0)
    z = update(parts[0], torch.ones(4, dtype=torch.float64))
    return (z * parts[1]).sum(), [x], parts[0], z


def split_output(update):
    x = _leaf(6)
    parts = (x + 0).split(3)
    z = update(parts[1], torch.ones(3, dtype=torch.float64))
    return (z * parts[0]).sum(), [x], parts[1], z


def no_grad_view(update):
    x = _leaf(6)
    a = x * 2
    with torch.no_grad():
        v = a[:3]
    z = update(v, torch.ones(3, dtype=torch.float64))
    return a.sum() + z.sum(), [x], v, z


def leaf_requires_grad(update):
    x = _leaf(5)
    z = update(x, torch.ones(5, dtype=torch.float64))
    return (z * z).sum(), [x], x, z


def parameter_in_grad_mode(update):
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    z = update(p, torch.ones(5, dtype=torch.float64))
    return (z * 3).sum(), [p], p, z


def saved_by_two_graphs(update):
    x, w1, w2 = _leaf(5), _leaf(5), _leaf(5)
    a = x + 1
    y1, y2 = a * w1, a * w2
    z = update(a, x)
    return (y1 + y2 + z).sum(), [x, w1, w2], a, z


def hooks_active(update):
    x, w = _leaf(5), _leaf(5)
    # A pack hook that returns the tensor itself: torch then skips the version check, and only a Python
    # reference holds the saved value.
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        a = x + 1
        y = a * w
        z = update(a, w)
    return (y + z).sum(), [x, w], a, z


def inference_tensor(update):
    x = _leaf(4)
    with torch.inference_mode():
        t = torch.zeros(4, dtype=torch.float64)
    z = update(t, x)
    return (z * z).sum(), [x], t, z


def result_shape_differs(update):
    x = _leaf(3, 4)
    t = torch.zeros(4, dtype=torch.float64)
    z = update(t, x)  # broadcasts to (3, 4)
    return (z * z).sum(), [x], t, z


def input_is_an_operand(update):
    x = _leaf(5)
    a = x * 2
    z = update(a, a)  # e.g. addcmul_(a, a, a) would save a, then overwrite it
    return (z * z).sum(), [x], a, z


def relu_output(update):
    x = _leaf(6)
    y = torch.relu(x)
    z = update(y, torch.ones(6, dtype=torch.float64))
    return (y * z).sum(), [x], y, z


HAZARDS = {
    "sigmoid output": sigmoid_output,
    "exp output": _unary_output(torch.exp),
    "tanh output": _unary_output(torch.tanh),
    "softmax output": _unary_output(lambda x: torch.softmax(x, 0)),
    "relu output": relu_output,
    "saved input of mul": saved_input_of_mul,
    "saved input of matmul": saved_input_of_matmul,
    "saved denominator of div": saved_denominator_of_div,
    "base of a saved view": base_of_saved_view,
    "unbind output": unbind_output,
    "split output": split_output,
    "view made under no_grad": no_grad_view,
    "leaf that requires grad": leaf_requires_grad,
    "Parameter in grad mode": parameter_in_grad_mode,
    "saved by two graphs": saved_by_two_graphs,
    "saved_tensors_hooks active": hooks_active,
    "inference tensor": inference_tensor,
    "result shape differs": result_shape_differs,
    "input is also an operand": input_is_an_operand,
}


def _run(pattern, update):
    torch.manual_seed(0)
    loss, leaves, target, result = pattern(update)
    before = target.detach().clone()
    grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), grads, target, result, before


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", HAZARDS)
def test_hazard_catalogue_copies_and_gradients_match(name, variant):
    safe, reference = VARIANTS[variant]
    pattern = HAZARDS[name]
    try:
        ref_loss, ref_grads, ref_target, ref_result, _ = _run(pattern, reference)
    except RuntimeError as error:  # e.g. lerp does not promote dtypes: then both must refuse alike
        with pytest.raises(type(error)):
            _run(pattern, safe)
        return
    loss, grads, target, result, _ = _run(pattern, safe)
    assert result is not target, "a hazard must not be written in place"
    torch.testing.assert_close(result, ref_result)
    torch.testing.assert_close(target, ref_target)  # the input was left untouched, like the reference's
    torch.testing.assert_close(loss, ref_loss)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg)


@pytest.mark.parametrize("variant", VARIANTS)
def test_wider_operand_is_computed_in_its_dtype_and_cast_into_the_target_like_torch(variant):
    # float32 target, float64 operand: torch's in-place ops compute in float64 and write float32 into the target
    # (lerp, which does not promote, raises: then both must raise alike).
    safe, _ = VARIANTS[variant]
    runs = []
    for update in (safe, _torch_inplace_update(variant)):
        torch.manual_seed(0)
        x = _leaf(4)
        t = torch.zeros(4, dtype=torch.float32) + 0.25
        try:
            z = update(t, x)
        except RuntimeError as error:
            runs.append(type(error))
            continue
        (g,) = torch.autograd.grad((z * z).sum(), [x])
        runs.append((z is t, z.dtype, z.detach(), g))
    if not isinstance(runs[1], tuple):
        assert runs[0] is runs[1]
        return
    (written, dtype, z, g), (_, rdtype, rz, rg) = runs
    assert written and dtype == rdtype == torch.float32
    assert torch.equal(z, rz)
    if variant == "accumulate_":  # no torch twin: its float32 gradient is scaled in another order than add_'s
        torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(g, rg)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_expanded_target_raises_torchs_error_and_is_left_unchanged(variant, grad):
    safe, _ = VARIANTS[variant]
    for update in (safe, _torch_inplace_update(variant)):
        base = torch.zeros(1, 4, dtype=torch.float64)
        t = base.expand(3, 4)
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match="single memory location"):
            update(t, _leaf(3, 4, requires_grad=grad))
        assert torch.equal(base, torch.zeros(1, 4, dtype=torch.float64))


def _torch_inplace_update(variant):
    """torch's own in-place method doing the variant's update (or the row's composition of torch's in-place ops,
    for an op torch has no method of)."""
    from op_table import OP_TABLE

    info = next(i for i in OP_TABLE if f"{i.name}_" == variant)

    def update(t, o):
        args, kwargs = info.update(t, o)
        if info.torch_inplace_update is not None:
            return info.torch_inplace_update(*args, **kwargs)
        return getattr(args[0], variant)(*args[1:], **kwargs)

    return update


def test_retain_graph_second_backward():
    for safe, reference in VARIANTS.values():
        results = []
        for update in (safe, reference):
            torch.manual_seed(0)
            x, w = _leaf(5), _leaf(5)
            a = x + 1
            loss = (a * w).sum()  # saves a
            first = torch.autograd.grad(loss, [x, w], retain_graph=True)
            z = update(a, w)
            second = torch.autograd.grad(loss, [x, w])  # the graph still reads a
            results.append((first, second, z, a))
        (f, s, z, a), (rf, rs, rz, ra) = results
        assert z is not a
        for got, want in zip(f + s + (z, a), rf + rs + (rz, ra)):
            torch.testing.assert_close(got, want)


def test_catalogue_is_large_enough():
    assert len(HAZARDS) + 1 >= 20  # + retain_graph


# ---- the positive side: these must be written in place -----------------------------------------------------


POSITIVE = {
    "zeros accumulator": lambda x: torch.zeros(5, dtype=torch.float64),
    "empty accumulator": lambda x: torch.empty(5, dtype=torch.float64).fill_(0.5),
    "output of add": lambda x: x + 1,
    "output of sub": lambda x: x - 1,
    "output of mul by a number": lambda x: x * 3,
    "output of matmul": lambda x: torch.eye(5, dtype=torch.float64) @ x,
    "output of accumulate": lambda x: safe_ops.accumulate([x, x], [1.0, 2.0]),
    "output of safe_ops.add": lambda x: safe_ops.add(x, 1.0),
    "tensor that does not require grad": lambda x: torch.randn(5, dtype=torch.float64),
    "output whose saver is gone": lambda x: x.exp().clone(),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", POSITIVE)
def test_positive_list_writes_in_place(name, variant):
    safe, reference = VARIANTS[variant]
    outs = []
    for update in (safe, reference):
        torch.manual_seed(0)
        x = _leaf(5)
        t = POSITIVE[name](x)
        ptr = t.data_ptr()
        o = torch.randn(5, dtype=torch.float64) + x
        result = update(t, o)
        grads = torch.autograd.grad((result * result).sum(), [x])
        outs.append((result, grads, t, ptr))
    (result, grads, t, ptr), (ref_result, ref_grads, _, _) = outs
    assert result is t and t.data_ptr() == ptr, f"{name}: expected an in-place write"
    torch.testing.assert_close(result, ref_result)
    torch.testing.assert_close(grads, ref_grads)


def test_parameters_under_no_grad_are_written_in_place():
    model = torch.nn.Linear(4, 3).double()
    p = model.weight
    ptr = p.data_ptr()
    with torch.no_grad():
        assert safe_ops.add_(p, torch.ones_like(p), alpha=-0.1) is p  # never used in a graph
    loss = model(torch.randn(2, 4, dtype=torch.float64)).sum()
    loss.backward()  # loss still alive: AccumulateGrad still holds p, harmlessly
    before = p.detach().clone()
    with torch.no_grad():
        assert safe_ops.add_(p, p.grad, alpha=-0.1) is p
        assert safe_ops.lerp_(p, torch.zeros_like(p), 0.5) is p
    assert p.data_ptr() == ptr
    torch.testing.assert_close(p.detach(), torch.lerp(before - 0.1 * p.grad, torch.zeros_like(p), 0.5))


def test_ema_buffer_update_is_in_place():
    ema = torch.zeros(8)
    ptr = ema.data_ptr()
    reference = torch.zeros(8)
    for _ in range(5):
        x = torch.randn(8)
        with torch.no_grad():
            ema = safe_ops.lerp_(ema, x, 1 - 0.9)
        reference = torch.lerp(reference, x, 1 - 0.9)
    assert ema.data_ptr() == ptr
    torch.testing.assert_close(ema, reference)


def test_gan_case_raises_at_the_call():
    torch.manual_seed(0)
    generator, discriminator = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    fake = generator(torch.randn(8, 4))
    d_loss = discriminator(fake).mean()  # the pending backward saved D's weight (for fake's gradient)
    weight = discriminator.weight
    before = weight.detach().clone()
    with torch.no_grad():
        with pytest.raises(InplaceHazardError, match="pending backward saved it"):
            safe_ops.add_(weight, torch.ones_like(weight))
    assert torch.equal(weight.detach(), before)
    d_loss.backward()  # and no version error later
    assert generator.weight.grad is not None


def test_no_grad_leaf_of_another_shape_raises_instead_of_copying():
    p = torch.nn.Parameter(torch.zeros(4))
    with torch.no_grad(), pytest.raises(InplaceHazardError, match="shape or dtype"):
        safe_ops.add_(p, torch.ones(3, 4))


def test_decisions_are_reported():
    x = _leaf(4)
    assert safe_ops.inplace_decision(x) == Decision.COPY_LEAF_REQUIRES_GRAD
    assert safe_ops.inplace_decision(x.exp()) in (Decision.COPY_SHARED_STORAGE, Decision.COPY_HELD_ELSEWHERE)
    assert safe_ops.inplace_decision(x[1:]) == Decision.COPY_VIEW  # a view of a leaf: torch's error
    assert safe_ops.inplace_decision((x * 2).unbind()[0]) == Decision.COPY_VIEW  # multi-output view
    assert safe_ops.inplace_decision((x * 2)[1:]) == Decision.IN_PLACE  # a lone view: CopySlices, as torch
    assert safe_ops.can_write_inplace(x + 1)
    assert not safe_ops.can_write_inplace(torch.zeros(1, 4).expand(3, 4))


# ---- the seed examples, written with safe_ops ---------------------------------------------------------------


def test_seed_leaf_plus_two():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = safe_ops.add_(x, 2)  # torch: `x += 2` raises the leaf error
    assert y is not x and torch.equal(x.detach(), torch.tensor([1.0, 2.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(2))


def test_seed_accumulation_loop():
    x = torch.randn(2, 2, requires_grad=True)
    total = torch.zeros_like(x)
    ptr = total.data_ptr()
    for i in range(5):
        total = safe_ops.add_(total, x, alpha=i)
        assert total.data_ptr() == ptr  # written in place at every step
    total.sum().backward()
    assert torch.equal(x.grad, torch.full((2, 2), 10.0))


# ---- threads ------------------------------------------------------------------------------------------------


def test_threads_each_running_safe_loops_and_backward():
    errors = []

    def worker(seed):
        try:
            g = torch.Generator().manual_seed(seed)
            for _ in range(20):
                x = torch.randn(64, generator=g, requires_grad=True)
                total = torch.zeros(64)
                ptr = total.data_ptr()
                for i in range(8):
                    total = safe_ops.add_(total, x * 1.0, alpha=i)
                assert total.data_ptr() == ptr
                total.sum().backward()
                assert torch.equal(x.grad, torch.full((64,), 28.0))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
