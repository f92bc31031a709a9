// Autograd for addcmul: d/dself = grad, d/dt1 = value·grad·t2, d/dt2 = value·grad·t1 (summed to each shape).
// Saves t2 only if t1 needs a gradient, t1 only if t2 does, nothing for self.
#include "common.h"

namespace safe_ops::autograd {
namespace {

using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Scalar&);
using InplaceSig = void(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Scalar&);
using BackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&,
                                                       const std::optional<at::Tensor>&, const at::Scalar&,
                                                       std::array<bool, 2>);

struct AddcmulBackward final : Node {
  ReduceShapes shapes;  // [self, t1, t2]
  double value = 1.0;
  SavedVariable t1_, t2_;

  void release_variables() override {
    t1_.reset_data();
    t2_.reset_data();
  }
  std::string name() const override { return "safe_ops::AddcmulBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(3);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    if (task_should_compute_output(0)) out[0] = shapes.reduce(grad, 0);
    const bool want1 = task_should_compute_output(1), want2 = task_should_compute_output(2);
    if (!want1 && !want2) return out;
    const at::Tensor t1 = want2 ? t1_.unpack() : at::Tensor();
    const at::Tensor t2 = want1 ? t2_.unpack() : at::Tensor();
    if (backward_needs_graph()) {
      if (want1) out[1] = shapes.reduce(apply_formula<formulas::AddcmulGradOne>(value, grad, t2)[0], 1);
      if (want2) out[2] = shapes.reduce(apply_formula<formulas::AddcmulGradOne>(value, grad, t1)[0], 2);
      return out;
    }
    static const auto backward = find_op<BackwardSig>("safe_ops::addcmul_backward", "");
    auto [g1, g2] = backward.call(grad, t1, t2, value, {want1, want2});
    if (want1) out[1] = shapes.reduce(g1, 1);
    if (want2) out[2] = shapes.reduce(g2, 2);
    return out;
  }
};

auto make_addcmul_node(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value)
    -> decltype(make_node<AddcmulBackward>()) {
  if (!torch::autograd::compute_requires_grad(self, t1, t2)) return {};
  auto node = make_node<AddcmulBackward>();
  node->shapes = ReduceShapes({self, t1, t2});
  node->value = value.toDouble();
  if (t1.requires_grad()) node->t2_ = SavedVariable(t2, false);
  if (t2.requires_grad()) node->t1_ = SavedVariable(t1, false);
  node->set_next_edges(torch::autograd::collect_next_edges(self, t1, t2));
  return node;
}

at::Tensor addcmul_autograd(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2,
                            const at::Scalar& value) {
  static const auto op = find_op<Sig>("safe_ops::addcmul", "");
  auto node = make_addcmul_node(self, t1, t2, value);
  at::Tensor result = call_below_autograd(op, self, t1, t2, value);
  attach(result, node);
  return result;
}

void addcmul_inplace_autograd(at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  static const auto op = find_op<InplaceSig>("safe_ops::addcmul_inplace", "");
  auto node = make_addcmul_node(self, t1, t2, value);
  check_inplace(self, static_cast<bool>(node));
  call_below_autograd(op, self, t1, t2, value);
  after_inplace(self, node);
}

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  m.impl("addcmul", addcmul_autograd);
  m.impl("addcmul_inplace", addcmul_inplace_autograd);
}

}  // namespace safe_ops::autograd
