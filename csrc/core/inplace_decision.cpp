#include "core/inplace_decision.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/SavedTensorHooks.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/variable.h>

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
  // they save visible to the counts above, and the Python side may then allow the write).
  if (grad_mode && at::SavedTensorDefaultHooks::get_hooks().has_value()) return Decision::kCOPY_HOOKS_ACTIVE;
  return Decision::kIN_PLACE;
}

}  // namespace

Decision decide(const at::Tensor& t) {
  // The wrappers of torch.func transforms hide the storage the counts below read; the functional result is
  // always correct there.
  if (t.key_set().has_any(c10::functorch_transforms_ks)) return Decision::kCOPY_TRANSFORMED;
  if (t.is_inference() && !c10::InferenceMode::is_enabled()) return Decision::kCOPY_INFERENCE;
  const bool grad_mode = c10::GradMode::is_enabled();
  const bool overlap = at::has_internal_overlap(t) == at::MemOverlap::Yes;
  if (t.requires_grad() && t.is_leaf()) return decide_parameter(t, grad_mode, overlap);
  if (overlap) return Decision::kCOPY_INTERNAL_OVERLAP;
  return t.requires_grad() ? decide_graph_tensor(t, grad_mode) : decide_state(t, grad_mode);
}

}  // namespace safe_ops
