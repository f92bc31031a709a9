// Shared pieces of the Autograd kernels. Each op's kernel records a Node that holds only what its backward
// formula reads (sizes and numbers by value; tensors as SavedVariables, so version checks and
// saved_tensors_hooks behave as for torch's own ops), then runs the op below autograd.
#pragma once

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include "core/formulas.h"
#include "generated/operators.h"

#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace safe_ops::formulas {
// Formulas over whole tensors (the double-backward path below) take their numbers as doubles.
template <>
struct CoefType<at::Tensor> {
  using type = double;
};
}  // namespace safe_ops::formulas

namespace safe_ops::autograd {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using Sizes = std::vector<c10::SymInt>;

// The shapes to sum gradients back to, one per input, kept only when the inputs' shapes differ (broadcasting).
// When they all match, every input has the output's shape: nothing is stored, no allocation on the hot path.
class ReduceShapes {
 public:
  ReduceShapes() = default;
  explicit ReduceShapes(std::initializer_list<std::reference_wrapper<const at::Tensor>> inputs) {
    record(inputs.begin(), inputs.end(), [](const auto& t) -> const at::Tensor& { return t.get(); });
  }
  explicit ReduceShapes(at::TensorList inputs) {
    record(inputs.begin(), inputs.end(), [](const at::Tensor& t) -> const at::Tensor& { return t; });
  }
  // grad summed over the dimensions along which input i was broadcast; grad itself when none.
  at::Tensor reduce(const at::Tensor& grad, size_t i) const {
    return sizes_.empty() ? grad : at::sum_to(grad, c10::SymIntArrayRef(sizes_[i]));
  }
  // factor·grad summed to input i's shape, scaled first as torch's formulas are (grad·alpha, then the engine's
  // sum_to), so a broadcast input's gradient has torch's bits; grad itself when factor is 1 and nothing is summed.
  at::Tensor reduce_scaled(const at::Tensor& grad, size_t i, double factor) const {
    return reduce(factor == 1.0 ? grad : grad * factor, i);
  }
  // Whether input i has grad's (the output's) shape.
  bool is_full(const at::Tensor& grad, size_t i) const { return sizes_.empty() || grad.sym_sizes().equals(sizes_[i]); }

 private:
  template <typename It, typename Get>
  void record(It begin, It end, Get get) {
    if (begin == end) return;
    const auto first = get(*begin).sym_sizes();
    bool all_same = true;
    for (It it = begin; it != end && all_same; ++it) all_same = get(*it).sym_sizes().equals(first);
    if (all_same) return;
    for (It it = begin; it != end; ++it) {
      const auto s = get(*it).sym_sizes();
      sizes_.emplace_back(s.begin(), s.end());
    }
  }
  std::vector<Sizes> sizes_;
};

// Node ownership changed from std::shared_ptr to c10::intrusive_ptr in recent torch; support both.
using NodeRef = decltype(torch::autograd::Edge::function);

template <typename T>
auto make_node() {
  if constexpr (std::is_same_v<NodeRef, std::shared_ptr<Node>>) {
    // deleteNode (found by argument-dependent lookup) frees long chains without deep recursion.
    return std::shared_ptr<T>(new T(), [](T* node) { deleteNode(node); });
  } else {
    return c10::make_intrusive<T>();
  }
}

// Forward-mode AD (dual tensors, torch.func.jvp / jacfwd). Level 0, as torch's generated kernels use: functorch
// nests transforms by wrapping tensors, not by level numbers. _fw_grad is undefined when forward AD is off.
constexpr uint64_t kFwLevel = 0;

inline at::Tensor tangent_of(const at::Tensor& t) { return t.defined() ? t._fw_grad(kFwLevel) : at::Tensor(); }
inline bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(kFwLevel).defined(); }
// The value without its tangent, for tangent formulas: a dual operand would give the tangent a tangent.
inline at::Tensor primal_of(const at::Tensor& t) { return has_tangent(t) ? t._fw_primal(kFwLevel) : t; }

// a + b where an undefined tangent is a zero.
inline at::Tensor add_tangents(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

// t·c, where an undefined tangent is a zero.
inline at::Tensor scale_tangent(const at::Tensor& t, double c) {
  if (!t.defined() || c == 1.0) return t;
  return t * c;
}

// `tangent` at `like`'s dtype and shape, never an input's tangent object itself: a shared tangent would be
// changed by a later in-place op on either tensor. An input's tangent is also held by that input's ForwardGrad,
// so a use count above one means "not ours" (callers move fresh tangents in).
inline at::Tensor own_tangent(at::Tensor tangent, const at::Tensor& like) {
  if (tangent.scalar_type() != like.scalar_type()) tangent = tangent.to(like.scalar_type());
  if (tangent.use_count() > 1) tangent = tangent.clone();
  if (!tangent.sym_sizes().equals(like.sym_sizes())) tangent = tangent.expand_symint(like.sym_sizes());
  return tangent;
}

// The functional result's tangent (nothing when no input had one).
inline void set_tangent(const at::Tensor& result, at::Tensor tangent) {
  if (tangent.defined()) result._set_fw_grad(own_tangent(std::move(tangent), result), kFwLevel, false);
}

// After an in-place kernel: the target's new tangent. An existing tangent is written in place, as torch's
// in-place ops do: autograd keeps one tangent object per tensor (views of a dual tensor share their base's).
inline void set_inplace_tangent(const at::Tensor& self, at::Tensor tangent) {
  if (!tangent.defined()) return;
  const at::Tensor& current = self._fw_grad(kFwLevel);
  if (current.defined()) {
    if (!tangent.is_same(current)) current.copy_(tangent);
  } else {
    self._set_fw_grad(own_tangent(std::move(tangent), self), kFwLevel, /*is_inplace_op=*/true);
  }
}

// torch.autograd.grad(is_grads_batched=True) batches a backward with torch's legacy vmap, which has no rules for
// the fused backward ops (and no fallback for their list results); it batches the aten composition.
inline bool legacy_batched(const at::Tensor& t) { return t.defined() && t.key_set().has(c10::DispatchKey::Batched); }

// The double-backward rule: when the backward itself is being differentiated (create_graph=True, or tensors
// carrying tangents: forward-over-reverse, torch.func.hessian), or batched by legacy vmap, the Nodes use
// differentiable aten compositions instead of the fused backward ops. `tensors`: the grad and the saved tensors
// the backward reads.
template <typename... Tensors>
bool backward_needs_graph(const Tensors&... tensors) {
  return c10::GradMode::is_enabled() || ((has_tangent(tensors) || legacy_batched(tensors)) || ...);
}

// A formula of csrc/core/formulas.h applied to whole tensors with differentiable aten ops: the double-backward path
// (create_graph=True) computes the same expression as the fused kernels.
template <template <typename...> class Formula, typename... Tensors>
std::array<at::Tensor, Formula<at::Tensor>::kOut> apply_formula(double scalar, const Tensors&... inputs) {
  using F = Formula<at::Tensor>;
  static_assert(sizeof...(Tensors) == F::kIn, "apply_formula: wrong operand count");
  const std::array<at::Tensor, F::kIn> in{inputs...};
  std::array<at::Tensor, F::kOut> out;
  F(formulas::Scalars{scalar, 0.0})(in.data(), out.data());
  return out;
}

// The dispatcher's handle of a declared operator (csrc/generated/operators.h), typed.
template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const schema::Operator& op) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(op.name, op.overload).template typed<Sig>();
}

// Runs `op` on the device kernels (the Autograd kernel has recorded the graph already).
template <typename Sig, typename... Args>
decltype(auto) call_below_autograd(const c10::TypedOperatorHandle<Sig>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

template <typename NodePtr>
void attach(const at::Tensor& result, const NodePtr& node) {
  if (node) torch::autograd::set_history(result, node);
}

// For in-place kernels: torch's own checks before writing (the leaf error, and the errors for views autograd
// forbids writing: views of leaves, multi-output and no_grad-created views), as torch's in-place ops do.
inline void check_inplace(const at::Tensor& self, bool requires_grad) {
  torch::autograd::check_inplace(self, requires_grad);
}

// After an in-place kernel wrote `self`: bump its version (readers that saved it must see the change) and
// make `node` its new history, as torch's in-place ops do.
template <typename NodePtr>
void after_inplace(const at::Tensor& self, const NodePtr& node) {
  torch::autograd::impl::bump_version(self);
  if (node) {
    node->add_input_metadata(self);
    torch::autograd::impl::rebase_history(self, {node, 0});
  }
}

}  // namespace safe_ops::autograd
