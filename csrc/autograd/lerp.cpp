// Autograd for lerp. Number weight w: d/dself = (1−w)·grad, d/dend = w·grad; saves nothing but w and shapes.
// Tensor weight: also d/dweight = grad·(end − self); saves weight only if self or end needs a gradient, self
// and end only if weight does. Forward mode: t_self + w·(t_end − t_self) (+ t_w·(end − self)).
#include "autograd/common.h"
#include "core/twin.h"

#include <ATen/ops/lerp.h>

namespace safe_ops::autograd {
namespace {

using ScalarSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Scalar&);
using TensorSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);
using ScalarInplaceSig = void(at::Tensor&, const at::Tensor&, const at::Scalar&);
using TensorInplaceSig = void(at::Tensor&, const at::Tensor&, const at::Tensor&);
using ScaleManySig = std::vector<at::Tensor>(const at::Tensor&, at::ArrayRef<double>);
using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&,
                                                                   const std::optional<at::Tensor>&,
                                                                   const std::optional<at::Tensor>&,
                                                                   std::array<bool, 3>);

struct LerpScalarBackward final : Node {
  ReduceShapes shapes;  // [self, end]
  double weight = 0.0;

  std::string name() const override { return "safe_ops::LerpBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(2);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    const bool want_self = task_should_compute_output(0), want_end = task_should_compute_output(1);
    const bool full_shapes = shapes.is_full(grad, 0) && shapes.is_full(grad, 1);
    if (want_self && want_end && full_shapes && !backward_needs_graph(grad)) {
      static const auto scale_many = find_op<ScaleManySig>(schema::scale_many);
      auto scaled = scale_many.call(grad, {1.0 - weight, weight});
      out[0] = std::move(scaled[0]);
      out[1] = std::move(scaled[1]);
      return out;
    }
    if (want_self) out[0] = shapes.reduce(grad * (1.0 - weight), 0);  // torch's order: scaled, then summed
    if (want_end) out[1] = shapes.reduce(grad * weight, 1);
    return out;
  }
};

struct LerpTensorBackward final : Node {
  ReduceShapes shapes;  // [self, end, weight]
  SavedVariable self_, end_, weight_;

  void release_variables() override {
    self_.reset_data();
    end_.reset_data();
    weight_.reset_data();
  }
  std::string name() const override { return "safe_ops::LerpBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(3);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    const std::array<bool, 3> want{task_should_compute_output(0), task_should_compute_output(1),
                                   task_should_compute_output(2)};
    if (!want[0] && !want[1] && !want[2]) return out;
    const at::Tensor weight = (want[0] || want[1]) ? weight_.unpack() : at::Tensor();
    const at::Tensor self = want[2] ? self_.unpack() : at::Tensor();
    const at::Tensor end = want[2] ? end_.unpack() : at::Tensor();
    std::array<at::Tensor, 3> full;
    if (backward_needs_graph(grad, weight, self, end)) {
      if (want[0]) full[0] = apply_formula<formulas::LerpBackward1>(0.0, grad, weight)[0];
      if (want[1]) full[1] = apply_formula<formulas::LerpBackward2>(0.0, grad, weight)[0];
      if (want[2]) full[2] = apply_formula<formulas::LerpBackward4>(0.0, grad, self, end)[0];
    } else {
      static const auto backward = find_op<BackwardSig>(schema::lerp_backward);
      std::tie(full[0], full[1], full[2]) = backward.call(grad, self, end, weight, want);
    }
    for (int i = 0; i < 3; ++i) {
      if (want[i]) out[i] = shapes.reduce(full[i], i);
    }
    return out;
  }
};

// Forward mode: the result's tangent, undefined when no operand has one. Reads self: call before an in-place write.
at::Tensor lerp_tangent(const at::Tensor& self, const at::Tensor& end, const at::Scalar& weight) {
  const double w = weight.toDouble();
  return add_tangents(scale_tangent(tangent_of(self), 1.0 - w), scale_tangent(tangent_of(end), w));
}

at::Tensor lerp_tangent(const at::Tensor& self, const at::Tensor& end, const at::Tensor& weight) {
  const at::Tensor self_t = tangent_of(self), end_t = tangent_of(end), weight_t = tangent_of(weight);
  const at::Tensor w = primal_of(weight);
  at::Tensor t;
  if (self_t.defined() && end_t.defined()) {
    t = at::lerp(self_t, end_t, w);
  } else if (self_t.defined()) {
    t = self_t - self_t * w;
  } else if (end_t.defined()) {
    t = end_t * w;
  }
  if (weight_t.defined()) t = add_tangents(t, weight_t * (primal_of(end) - primal_of(self)));
  return t;
}

auto make_scalar_node(const at::Tensor& self, const at::Tensor& end, const at::Scalar& weight)
    -> decltype(make_node<LerpScalarBackward>()) {
  if (!torch::autograd::compute_requires_grad(self, end)) return {};
  auto node = make_node<LerpScalarBackward>();
  node->shapes = ReduceShapes({self, end});
  node->weight = weight.toDouble();
  node->set_next_edges(torch::autograd::collect_next_edges(self, end));
  return node;
}

auto make_tensor_node(const at::Tensor& self, const at::Tensor& end, const at::Tensor& weight)
    -> decltype(make_node<LerpTensorBackward>()) {
  if (!torch::autograd::compute_requires_grad(self, end, weight)) return {};
  auto node = make_node<LerpTensorBackward>();
  node->shapes = ReduceShapes({self, end, weight});
  if (self.requires_grad() || end.requires_grad()) node->weight_ = SavedVariable(weight, false);
  if (weight.requires_grad()) {
    node->self_ = SavedVariable(self, false);
    node->end_ = SavedVariable(end, false);
  }
  node->set_next_edges(torch::autograd::collect_next_edges(self, end, weight));
  return node;
}

at::Tensor lerp_scalar_autograd(const at::Tensor& self, const at::Tensor& end, const at::Scalar& weight) {
  static const auto op = find_op<ScalarSig>(schema::lerp_Scalar);
  auto node = make_scalar_node(self, end, weight);
  at::Tensor result = call_below_autograd(op, self, end, weight);
  attach(result, node);
  set_tangent(result, lerp_tangent(self, end, weight));
  return result;
}

at::Tensor lerp_tensor_autograd(const at::Tensor& self, const at::Tensor& end, const at::Tensor& weight) {
  static const auto op = find_op<TensorSig>(schema::lerp_Tensor);
  auto node = make_tensor_node(self, end, weight);
  at::Tensor result = call_below_autograd(op, self, end, weight);
  attach(result, node);
  set_tangent(result, lerp_tangent(self, end, weight));
  return result;
}

void lerp_scalar_inplace_autograd(at::Tensor& self, const at::Tensor& end, const at::Scalar& weight) {
  static const auto op = find_op<ScalarInplaceSig>(schema::lerp_inplace_Scalar);
  auto node = make_scalar_node(self, end, weight);
  check_inplace(self, static_cast<bool>(node));
  at::Tensor tangent = lerp_tangent(self, end, weight);
  call_below_autograd(op, self, end, weight);
  after_inplace(self, node);
  set_inplace_tangent(self, std::move(tangent));
}

void lerp_tensor_inplace_autograd(at::Tensor& self, const at::Tensor& end, const at::Tensor& weight) {
  static const auto op = find_op<TensorInplaceSig>(schema::lerp_inplace_Tensor);
  // The weight's gradient reads the original self, which the write destroys.
  TORCH_CHECK(!(c10::GradMode::is_enabled() && weight.requires_grad()),
              "safe_ops.lerp_inplace cannot write in place when weight requires grad: its gradient reads the "
              "original input. Use safe_ops.lerp_ (which then returns a new tensor) or safe_ops.lerp.");
  auto node = make_tensor_node(self, end, weight);
  check_inplace(self, static_cast<bool>(node));
  at::Tensor tangent = lerp_tangent(self, end, weight);
  call_below_autograd(op, self, end, weight);
  after_inplace(self, node);
  set_inplace_tangent(self, std::move(tangent));
}

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  impl_with_twin(m, schema::lerp_Scalar, lerp_scalar_autograd);
  impl_with_twin(m, schema::lerp_Tensor, lerp_tensor_autograd);
  impl_with_twin(m, schema::lerp_inplace_Scalar, lerp_scalar_inplace_autograd);
  impl_with_twin(m, schema::lerp_inplace_Tensor, lerp_tensor_inplace_autograd);
}

}  // namespace safe_ops::autograd
