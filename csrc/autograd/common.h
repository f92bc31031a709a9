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
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace safe_ops::autograd {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using Sizes = std::vector<c10::SymInt>;

inline Sizes sizes_of(const at::Tensor& t) {
  const auto s = t.sym_sizes();
  return Sizes(s.begin(), s.end());
}

// grad summed over the dimensions along which an input of `sizes` was broadcast; grad itself when none.
inline at::Tensor sum_to(const at::Tensor& grad, const Sizes& sizes) {
  return at::sum_to(grad, c10::SymIntArrayRef(sizes));
}

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

// The double-backward rule: when the backward itself is being differentiated (create_graph=True), the
// Nodes use differentiable aten compositions instead of the fused backward ops.
inline bool backward_needs_graph() {
  return c10::GradMode::is_enabled();
}

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).template typed<Sig>();
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

// For in-place kernels: raise the leaf error before writing, as torch's in-place ops do.
inline void check_inplace(const at::Tensor& self, bool requires_grad) {
  TORCH_CHECK(!(requires_grad && self.is_leaf() && self.requires_grad()),
              "a leaf Variable that requires grad is being used in an in-place operation.");
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
