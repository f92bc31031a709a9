// Autograd for add/sub (functional and in-place): d/dself = grad, d/dother = alpha·grad, each summed to the
// input's shape. Saves nothing but two shapes and alpha. Forward mode: t_self + alpha·t_other.
#include "autograd/common.h"
#include "core/twin.h"

namespace safe_ops::autograd {
namespace {

struct AddBackward final : Node {
  ReduceShapes shapes;  // [self, other]
  double alpha = 1.0;   // already negated for sub
  bool other_is_tensor = true;

  variable_list apply(variable_list&& grads) override {
    variable_list out(other_is_tensor ? 2 : 1);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    if (task_should_compute_output(0)) out[0] = shapes.reduce(grad, 0);
    if (other_is_tensor && task_should_compute_output(1)) {
      out[1] = shapes.reduce_scaled(grad, 1, alpha);
    }
    return out;
  }
  std::string name() const override { return "safe_ops::AddBackward"; }
};

using AddNodePtr = decltype(make_node<AddBackward>());

AddNodePtr make_add_node(const at::Tensor& self, const at::Tensor* other, double alpha) {
  const bool requires_grad =
      other ? torch::autograd::compute_requires_grad(self, *other) : torch::autograd::compute_requires_grad(self);
  if (!requires_grad) return {};
  auto node = make_node<AddBackward>();
  node->alpha = alpha;
  node->other_is_tensor = other != nullptr;
  if (other) {
    node->shapes = ReduceShapes({self, *other});
    node->set_next_edges(torch::autograd::collect_next_edges(self, *other));
  } else {
    node->set_next_edges(torch::autograd::collect_next_edges(self));
  }
  return node;
}

// Forward mode (linear): the result's tangent, undefined when no operand has one.
at::Tensor add_tangent(const at::Tensor& self, const at::Tensor* other, double alpha) {
  return add_tangents(tangent_of(self), other ? scale_tangent(tangent_of(*other), alpha) : at::Tensor());
}

using TensorSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Scalar&);
using ScalarSig = at::Tensor(const at::Tensor&, const at::Scalar&, const at::Scalar&);
using TensorInplaceSig = void(at::Tensor&, const at::Tensor&, const at::Scalar&);
using ScalarInplaceSig = void(at::Tensor&, const at::Scalar&, const at::Scalar&);

// sign: +1 for add, -1 for sub; Op: the operator below autograd. One template per (signature, op) keeps the eight
// registrations four bodies.
template <int Sign, const schema::TwinnedOperator& Op>
at::Tensor tensor_autograd(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  static const auto op = find_op<TensorSig>(Op);
  auto node = make_add_node(self, &other, Sign * alpha.toDouble());
  at::Tensor result = call_below_autograd(op, self, other, alpha);
  attach(result, node);
  set_tangent(result, add_tangent(self, &other, Sign * alpha.toDouble()));
  return result;
}

template <const schema::TwinnedOperator& Op>
at::Tensor scalar_autograd(const at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  static const auto op = find_op<ScalarSig>(Op);
  auto node = make_add_node(self, nullptr, 1.0);
  at::Tensor result = call_below_autograd(op, self, other, alpha);
  attach(result, node);
  set_tangent(result, add_tangent(self, nullptr, 1.0));
  return result;
}

template <int Sign, const schema::TwinnedOperator& Op>
void tensor_inplace_autograd(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  static const auto op = find_op<TensorInplaceSig>(Op);
  auto node = make_add_node(self, &other, Sign * alpha.toDouble());
  check_inplace(self, static_cast<bool>(node));
  at::Tensor tangent = add_tangent(self, &other, Sign * alpha.toDouble());
  call_below_autograd(op, self, other, alpha);
  after_inplace(self, node);
  set_inplace_tangent(self, std::move(tangent));
}

template <const schema::TwinnedOperator& Op>
void scalar_inplace_autograd(at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  static const auto op = find_op<ScalarInplaceSig>(Op);
  auto node = make_add_node(self, nullptr, 1.0);
  check_inplace(self, static_cast<bool>(node));
  call_below_autograd(op, self, other, alpha);
  after_inplace(self, node);
  // self's tangent is unchanged (d(self + c)/dself = 1); nothing to set.
}

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  impl_with_twin(m, schema::add_Tensor, tensor_autograd<1, schema::add_Tensor>);
  impl_with_twin(m, schema::sub_Tensor, tensor_autograd<-1, schema::sub_Tensor>);
  impl_with_twin(m, schema::add_Scalar, scalar_autograd<schema::add_Scalar>);
  impl_with_twin(m, schema::sub_Scalar, scalar_autograd<schema::sub_Scalar>);
  impl_with_twin(m, schema::add_inplace_Tensor, tensor_inplace_autograd<1, schema::add_inplace_Tensor>);
  impl_with_twin(m, schema::sub_inplace_Tensor, tensor_inplace_autograd<-1, schema::sub_inplace_Tensor>);
  impl_with_twin(m, schema::add_inplace_Scalar, scalar_inplace_autograd<schema::add_inplace_Scalar>);
  impl_with_twin(m, schema::sub_inplace_Scalar, scalar_inplace_autograd<schema::sub_inplace_Scalar>);
}

}  // namespace safe_ops::autograd
