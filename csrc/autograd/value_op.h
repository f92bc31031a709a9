// Autograd for ops of the form self + value·f(tensor1, tensor2) (addcmul and its kin): d/dself = grad and the two
// operand gradients of f, each summed to its input's shape. An op supplies a Traits struct:
//   static constexpr const char* kName;   (node name)
//   static constexpr const schema::TwinnedOperator& kOp, kInplaceOp; const schema::Operator& kBackwardOp;
//                                                    (its operators: csrc/generated/operators.h)
//   template <typename T> using Grad1 = ...; template <typename T> using Grad2 = ...;   (csrc/core/formulas.h)
//   static constexpr bool kGrad2ReadsT2;   d/dtensor2 reads tensor2 too, or only tensor1 (addcmul)
//   static bool saves_t1(bool need1, bool need2); static bool saves_t2(bool need1, bool need2);
//   static at::Tensor tangent(t1, t2, t1_t, t2_t);   forward mode: the tangent of f (an operand tangent
//                                                    may be undefined: a zero; not both)
// Saved: only what the requested gradients read (never self).
#pragma once

#include "autograd/common.h"

namespace safe_ops::autograd {

template <typename Traits>
struct ValueOpBackward final : Node {
  using BackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&,
                                                         const std::optional<at::Tensor>&, const at::Scalar&,
                                                         std::array<bool, 2>);
  ReduceShapes shapes;  // [self, t1, t2]
  double value = 1.0;
  SavedVariable t1_, t2_;

  void release_variables() override {
    t1_.reset_data();
    t2_.reset_data();
  }
  std::string name() const override { return Traits::kName; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(3);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    if (task_should_compute_output(0)) out[0] = shapes.reduce(grad, 0);
    const bool want1 = task_should_compute_output(1), want2 = task_should_compute_output(2);
    if (!want1 && !want2) return out;
    const at::Tensor t1 = Traits::saves_t1(want1, want2) ? t1_.unpack() : at::Tensor();
    const at::Tensor t2 = Traits::saves_t2(want1, want2) ? t2_.unpack() : at::Tensor();
    if (backward_needs_graph(grad, t1, t2)) {
      if (want1) out[1] = shapes.reduce(apply_formula<Traits::template Grad1>(value, grad, t2)[0], 1);
      if (want2) out[2] = shapes.reduce(grad2(grad, t1, t2), 2);
      return out;
    }
    static const auto backward = find_op<BackwardSig>(Traits::kBackwardOp);
    auto [g1, g2] = backward.call(grad, t1, t2, value, {want1, want2});
    if (want1) out[1] = shapes.reduce(g1, 1);
    if (want2) out[2] = shapes.reduce(g2, 2);
    return out;
  }

 private:
  at::Tensor grad2(const at::Tensor& grad, const at::Tensor& t1, const at::Tensor& t2) const {
    if constexpr (Traits::kGrad2ReadsT2) {
      return apply_formula<Traits::template Grad2>(value, grad, t1, t2)[0];
    } else {
      return apply_formula<Traits::template Grad2>(value, grad, t1)[0];
    }
  }
};

template <typename Traits>
auto make_value_op_node(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value)
    -> decltype(make_node<ValueOpBackward<Traits>>()) {
  if (!torch::autograd::compute_requires_grad(self, t1, t2)) return {};
  auto node = make_node<ValueOpBackward<Traits>>();
  node->shapes = ReduceShapes({self, t1, t2});
  node->value = value.toDouble();
  const bool need1 = t1.requires_grad(), need2 = t2.requires_grad();
  if (Traits::saves_t1(need1, need2)) node->t1_ = SavedVariable(t1, false);
  if (Traits::saves_t2(need1, need2)) node->t2_ = SavedVariable(t2, false);
  node->set_next_edges(torch::autograd::collect_next_edges(self, t1, t2));
  return node;
}

// Forward mode: t_self + value·(tangent of f); undefined when no operand has a tangent.
template <typename Traits>
at::Tensor value_op_tangent(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2,
                            const at::Scalar& value) {
  const at::Tensor t1_t = tangent_of(t1), t2_t = tangent_of(t2);
  at::Tensor f_t =
      (t1_t.defined() || t2_t.defined()) ? Traits::tangent(primal_of(t1), primal_of(t2), t1_t, t2_t) : at::Tensor();
  return add_tangents(tangent_of(self), scale_tangent(f_t, value.toDouble()));
}

template <typename Traits>
at::Tensor value_op_autograd(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2,
                             const at::Scalar& value) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Scalar&);
  static const auto op = find_op<Sig>(Traits::kOp);
  auto node = make_value_op_node<Traits>(self, t1, t2, value);
  at::Tensor result = call_below_autograd(op, self, t1, t2, value);
  attach(result, node);
  set_tangent(result, value_op_tangent<Traits>(self, t1, t2, value));
  return result;
}

template <typename Traits>
void value_op_inplace_autograd(at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  using Sig = void(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Scalar&);
  static const auto op = find_op<Sig>(Traits::kInplaceOp);
  auto node = make_value_op_node<Traits>(self, t1, t2, value);
  check_inplace(self, static_cast<bool>(node));
  at::Tensor tangent = value_op_tangent<Traits>(self, t1, t2, value);  // before the write: it reads t1, t2
  call_below_autograd(op, self, t1, t2, value);
  after_inplace(self, node);
  set_inplace_tangent(self, std::move(tangent));
}

}  // namespace safe_ops::autograd
