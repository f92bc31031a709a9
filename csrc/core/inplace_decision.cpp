#include "core/inplace_decision.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/SavedTensorHooks.h>
#include <ATen/native/TypeProperties.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <sstream>
#include <vector>

namespace safe_ops {
namespace {

using torch::autograd::CreationMeta;

// Holders of t's TensorImpl that never read its value: the Python object and, for a leaf in a live graph, its
// AccumulateGrad node. Anything more (a SavedVariable of a pending node, a view's reference to its base) may.
long expected_uses(const at::TensorBase& t) {
  const bool accumulates = t.requires_grad() && t.is_leaf() && torch::autograd::impl::try_get_grad_accumulator(t);
  return 1 + (accumulates ? 1 : 0);
}

bool held_elsewhere(const at::TensorBase& t) { return static_cast<long>(t.use_count()) > expected_uses(t); }

long storage_uses(const at::Tensor& t) { return static_cast<long>(t.unsafeGetTensorImpl()->storage().use_count()); }

// A view that only it and its base share, the base held by nothing but its Python object and this view: then no
// saved value, alias or other view can see the write (torch records it as CopySlices on the base).
bool lone_view(const at::Tensor& t) {
  const at::TensorBase& base = t._base();
  return storage_uses(t) <= 2 && static_cast<long>(base.use_count()) <= expected_uses(base) + 1;
}

// Views torch itself refuses to write in grad mode (multi-output, no_grad- or inference-created views of a tensor
// that requires grad; views of a leaf that requires grad).
bool view_forbidden_in_grad_mode(const at::Tensor& t) {
  auto* meta = torch::autograd::impl::get_view_autograd_meta(t);
  if (meta != nullptr && meta->has_bw_view() && meta->get_creation_meta() != CreationMeta::DEFAULT) return true;
  const at::TensorBase& base = t._base();
  return base.requires_grad() && base.is_leaf();
}

Decision decide_parameter(const at::Tensor& t, bool grad_mode, bool overlap) {
  if (grad_mode) return Decision::kCOPY_LEAF_REQUIRES_GRAD;
  // torch lets no_grad code update Parameters in place; a copy would never reach the module that owns the
  // Parameter, so the only choices are the write or an error. Aliases (.data, state_dict() values) and
  // flat-buffer storage are no hazard; a saver of the Parameter or of a view of it (which holds the Parameter
  // as its base) is.
  if (overlap) return Decision::kRAISE_INTERNAL_OVERLAP;
  return held_elsewhere(t) ? Decision::kRAISE_SAVED_LEAF_NO_GRAD : Decision::kIN_PLACE;
}

// State and plain tensors (nothing of them is part of a graph yet): the write has torch's effect, CopySlices on
// the base for a view when an operand requires grad. Aliases are the idiom of state updates (state_dict()
// values, .data, flat-buffer views) and are written. A holder of the tensor itself may be a pending node that
// saved it: copy in grad mode, raise under no_grad (there a copy would leave the state stale). Who else shares
// the memory cannot be told from the counts (a Parameter's `.data` and a saved output's look alike); a saver
// that shares the version counter (views, detach()) is reported at backward by torch's own check, as with
// torch's op, and one that does not (`.data`) goes unseen, as with torch's op: safe_ops.guard() finds those.
Decision decide_state(const at::Tensor& t, bool grad_mode) {
  if (grad_mode && t.is_view() && view_forbidden_in_grad_mode(t)) return Decision::kCOPY_VIEW;
  if (held_elsewhere(t)) return grad_mode ? Decision::kCOPY_HELD_ELSEWHERE : Decision::kRAISE_HELD_NO_GRAD;
  return Decision::kIN_PLACE;
}

// A tensor in a graph (an activation): a copy is what the caller rebinds, so copy whenever a pending backward
// might read the memory.
Decision decide_graph_tensor(const at::Tensor& t, bool grad_mode) {
  if (t.is_view()) {
    if (view_forbidden_in_grad_mode(t)) return Decision::kCOPY_VIEW;
    if (!lone_view(t)) return Decision::kCOPY_VIEW;
  }
  if (held_elsewhere(t)) return Decision::kCOPY_HELD_ELSEWHERE;
  if (!t.is_view() && storage_uses(t) > 1) return Decision::kCOPY_SHARED_STORAGE;
  // Last, so that it is reported only when nothing else forbids the write (safe_ops.guard's own hooks keep what
  // they save visible to the counts above, and decide_write() then allows the write).
  if (grad_mode && at::SavedTensorDefaultHooks::get_hooks().has_value()) return Decision::kCOPY_HOOKS_ACTIVE;
  return Decision::kIN_PLACE;
}

// decide() with grad mode read once by the caller (inlined: decide_write() is on every fast in-place call).
[[gnu::always_inline]] inline Decision decide_target(const at::Tensor& t, bool grad_mode) {
  // The wrappers of torch.func transforms hide the storage the counts below read; the functional result is
  // always correct there.
  if (t.key_set().has_any(c10::functorch_transforms_ks)) return Decision::kCOPY_TRANSFORMED;
  if (t.is_inference() && !c10::InferenceMode::is_enabled()) return Decision::kCOPY_INFERENCE;
  const bool overlap = at::has_internal_overlap(t) == at::MemOverlap::Yes;
  if (t.requires_grad() && t.is_leaf()) return decide_parameter(t, grad_mode, overlap);
  if (overlap) return Decision::kCOPY_INTERNAL_OVERLAP;
  return t.requires_grad() ? decide_graph_tensor(t, grad_mode) : decide_state(t, grad_mode);
}

}  // namespace

Decision decide(const at::Tensor& t) { return decide_target(t, c10::GradMode::is_enabled()); }

namespace {

thread_local const void* guard_pack_hook = nullptr;

// Whether the saved_tensors_hooks on top of this thread's stack are safe_ops.guard's own, with no user hook.
bool hooks_are_only_guards() {
  if (guard_pack_hook == nullptr) return false;
  const auto hooks = at::SavedTensorDefaultHooks::get_hooks();
  if (!hooks.has_value()) return false;
  const c10::SafePyObject& pack = hooks->first;
  return static_cast<const void*>(pack.ptr(&pack.pyinterpreter())) == guard_pack_hook;
}

// Each tensor that joins the result's shape ('o', 'g', the members of 'l'), in parameter order.
template <typename F>
void for_each_shaped(c10::ArrayRef<Operand> operands, F&& f) {
  for (const Operand& o : operands) {
    if (o.role == 'o' || o.role == 'g') {
      f(*o.tensor);
    } else if (o.role == 'l') {
      for (const at::Tensor& t : o.list) f(t);
    }
  }
}

// Each tensor operand of any role ('o', 'g', 'c', the members of 'l').
template <typename F>
void for_each_tensor(c10::ArrayRef<Operand> operands, F&& f) {
  for (const Operand& o : operands) {
    if (o.role == 'o' || o.role == 'g' || o.role == 'c') {
      f(*o.tensor);
    } else if (o.role == 'l') {
      for (const at::Tensor& t : o.list) f(t);
    }
  }
}

int category(at::ScalarType t) {
  if (t == at::kBool) return 0;
  if (at::isComplexType(t)) return 3;
  return at::isFloatingType(t) ? 2 : 1;
}

int category(const c10::Scalar& s) {
  if (s.isBoolean()) return 0;
  if (s.isComplex()) return 3;
  return s.isFloatingPoint() ? 2 : 1;
}

// torch's promotion over the target and the operands: dimensioned tensors first, 0-dim tensors and the coefficients
// (as Σ w[i]·x[i] sees them) where their category is higher, then each number operand as a wrapped number.
at::ScalarType promoted_dtype(const at::Tensor& target, c10::ArrayRef<Operand> operands) {
  at::native::ResultTypeState state{};
  state = at::native::update_result_type_state(target, state);
  for_each_shaped(operands, [&](const at::Tensor& t) { state = at::native::update_result_type_state(t, state); });
  for (const Operand& o : operands) {
    if (o.role != 'c') continue;
    const at::ScalarType c = o.tensor->scalar_type();
    state.zeroResult = state.zeroResult == at::ScalarType::Undefined ? c : c10::promoteTypes(state.zeroResult, c);
  }
  at::ScalarType dtype = at::native::result_type(state);
  for (const Operand& o : operands) {
    if (o.role != 'n') continue;
    at::native::ResultTypeState with_number{};
    with_number.dimResult = dtype;
    dtype = at::native::result_type(at::native::update_result_type_state(*o.number, with_number));
  }
  return dtype;
}

// An op that does not promote: the first operand of another dtype that torch refuses (a 0-dim one after the first
// is taken, as torch takes lerp_'s 0-dim weight), or nullptr.
const at::Tensor* dtype_mismatch(const at::Tensor& target, c10::ArrayRef<Operand> operands) {
  const at::Tensor* found = nullptr;
  size_t i = 0;
  auto check = [&](const at::Tensor& o) {
    if (found == nullptr && o.scalar_type() != target.scalar_type() && !(i > 0 && o.dim() == 0)) found = &o;
    ++i;
  };
  for_each_shaped(operands, check);
  for (const Operand& o : operands) {
    if (o.role == 'c') check(*o.tensor);
  }
  return found;
}

// The result's shape against the target's, as torch.broadcast_shapes(target, *shaped) computes it.
enum class Fit { kFits, kDoesNotFit, kMismatch };

Fit broadcast_fit(const at::Tensor& target, c10::ArrayRef<Operand> operands, std::string* message) {
  bool equal = true;
  for_each_shaped(operands, [&](const at::Tensor& t) { equal = equal && t.sizes().equals(target.sizes()); });
  if (equal) return Fit::kFits;
  std::vector<at::IntArrayRef> shapes{target.sizes()};
  size_t ndim = target.dim();
  for_each_shaped(operands, [&](const at::Tensor& t) {
    shapes.push_back(t.sizes());
    ndim = std::max(ndim, static_cast<size_t>(t.dim()));
  });
  std::vector<int64_t> common(ndim, 1);
  for (size_t arg = 0; arg < shapes.size(); ++arg) {
    const at::IntArrayRef shape = shapes[arg];
    for (int64_t idx = -1; idx >= -static_cast<int64_t>(shape.size()); --idx) {
      const int64_t s = shape[shape.size() + idx];
      int64_t& c = common[ndim + idx];
      if (s == c) continue;
      if (c == 1) {
        c = s;
        continue;
      }
      if (s == 1) continue;
      if (message != nullptr) {
        std::ostringstream out;
        out << "Attempting to broadcast a dimension of length " << s << " at " << idx
            << "! Mismatching argument at index " << arg << " had torch.Size(" << shape
            << "); but expected shape should be broadcastable to " << at::IntArrayRef(common);
        *message = out.str();
      }
      return Fit::kMismatch;
    }
  }
  return at::IntArrayRef(common).equals(target.sizes()) ? Fit::kFits : Fit::kDoesNotFit;
}

// torch's dtype and shape errors, in the order the op meets them (dtype, then shape), or IN_PLACE when there are
// none; `fits` whether the result has the target's shape.
Decision torch_errors(const at::Tensor& target, char target_role, c10::ArrayRef<Operand> operands, bool& fits) {
  fits = true;
  if (target_role == 'f') {
    if (dtype_mismatch(target, operands) != nullptr) return Decision::kRAISE_DTYPE_MISMATCH;
  } else {
    // The common case without the promotion: every tensor of the target's dtype, no number of a higher category.
    bool same = true;
    for_each_tensor(operands, [&](const at::Tensor& t) { same = same && t.scalar_type() == target.scalar_type(); });
    for (const Operand& o : operands) {
      same = same && (o.role != 'n' || category(*o.number) <= category(target.scalar_type()));
    }
    if (!same && !at::canCast(promoted_dtype(target, operands), target.scalar_type())) {
      return Decision::kRAISE_CAST_ERROR;
    }
  }
  const Fit fit = broadcast_fit(target, operands, nullptr);
  if (fit == Fit::kMismatch) return Decision::kRAISE_SHAPE_MISMATCH;
  fits = fit == Fit::kFits;
  return Decision::kIN_PLACE;
}

}  // namespace

void set_guard_pack_hook(const void* pack_hook) { guard_pack_hook = pack_hook; }

// safe_ops.guard reaches the core through torch's op registry, the one part of safe_ops it may name:
// torch.ops.safe_ops._set_guard_pack_hook(id(pack) or 0) (CPython's id is the object's address).
TORCH_LIBRARY_FRAGMENT(safe_ops, m) {
  m.def("_set_guard_pack_hook(int pack_hook) -> ()", [](int64_t pack_hook) {
    set_guard_pack_hook(reinterpret_cast<const void*>(static_cast<intptr_t>(pack_hook)));
  });
}

Decision decide_write(const at::Tensor& target, char target_role, c10::ArrayRef<Operand> operands, Mode mode) {
  const bool grad_mode = c10::GradMode::is_enabled();
  // One pass for the common case (every operand of the target's dtype and, joining the shape, of its shape; no
  // number of a higher category): then torch raises nothing and the result fits. And whether an operand is the
  // target, or one whose gradient reads the original target requires grad in grad mode.
  const at::ScalarType dtype = target.scalar_type();
  const int dtype_category = category(dtype);
  const at::IntArrayRef sizes = target.sizes();
  bool common = true, is_target = false, reads_target = false;
  auto see = [&](const at::Tensor& t, bool shaped) {
    common = common && t.scalar_type() == dtype && (!shaped || t.sizes().equals(sizes));
    is_target = is_target || t.is_same(target);
  };
  for (const Operand& o : operands) {
    switch (o.role) {
      case 'g':
        reads_target = reads_target || (grad_mode && o.tensor->requires_grad());
        see(*o.tensor, true);
        break;
      case 'o': see(*o.tensor, true); break;
      case 'c': see(*o.tensor, false); break;
      case 'l':
        for (const at::Tensor& t : o.list) see(t, true);
        break;
      case 'n': common = common && category(*o.number) <= dtype_category; break;
      default: break;
    }
  }
  // An operand whose gradient reads the original target: never written, and torch's dtype and shape errors are
  // then the functional op's to raise.
  bool fits = true;
  if (!common && !reads_target) {
    const Decision error = torch_errors(target, target_role, operands, fits);
    if (error != Decision::kIN_PLACE) return error;
  }
  if (mode == Mode::kCompiled) {
    if (reads_target) return Decision::kCOPY_GRAD_READS_TARGET;
    if (!fits) return Decision::kCOPY_RESULT_DOES_NOT_FIT;
    return grad_mode && target.requires_grad() ? Decision::kCOPY_COMPILED_GRAPH_TENSOR : Decision::kIN_PLACE;
  }
  const Decision d = decide_target(target, grad_mode);
  switch (d) {
    case Decision::kCOPY_TRANSFORMED:  // the functional result, always
    case Decision::kRAISE_SAVED_LEAF_NO_GRAD:
    case Decision::kRAISE_HELD_NO_GRAD:
    case Decision::kCOPY_INTERNAL_OVERLAP:  // torch's error, whatever the operands
    case Decision::kRAISE_INTERNAL_OVERLAP: return d;
    default: break;
  }
  if (reads_target) return Decision::kCOPY_GRAD_READS_TARGET;
  if (!fits) {
    // A state update (a Parameter, a buffer) under no_grad: a copy would leave it stale.
    const bool state = !target.requires_grad() || target.is_leaf();
    return !grad_mode && state ? Decision::kRAISE_RESULT_DOES_NOT_FIT_NO_GRAD : Decision::kCOPY_RESULT_DOES_NOT_FIT;
  }
  if (d != Decision::kIN_PLACE && !(d == Decision::kCOPY_HOOKS_ACTIVE && hooks_are_only_guards())) return d;
  return grad_mode && is_target ? Decision::kCOPY_OPERAND_IS_TARGET : Decision::kIN_PLACE;
}

std::string write_error_message(Decision decision, const at::Tensor& target, c10::ArrayRef<Operand> operands) {
  std::ostringstream out;
  if (decision == Decision::kRAISE_CAST_ERROR) {
    out << "result type " << promoted_dtype(target, operands) << " can't be cast to the desired output type "
        << target.scalar_type();
  } else if (decision == Decision::kRAISE_DTYPE_MISMATCH) {
    const at::Tensor* o = dtype_mismatch(target, operands);
    if (o == nullptr) return {};
    out << "expected dtype torch." << c10::getDtypeNames(target.scalar_type()).first
        << " for every operand of the in-place op, but got dtype torch." << c10::getDtypeNames(o->scalar_type()).first;
  } else if (decision == Decision::kRAISE_SHAPE_MISMATCH) {
    std::string message;
    broadcast_fit(target, operands, &message);
    return message;
  }
  return out.str();
}

}  // namespace safe_ops
