// Autograd for addcdiv: d/dt1 = grad·value/t2, d/dt2 = −grad·value·t1/t2². Saves t2 if either operand needs a
// gradient, t1 only if t2 does. Forward mode: t_self + value·(t1_t/t2 − t1·t2_t/t2²).
#include "autograd/value_op.h"
#include "core/twin.h"

namespace safe_ops::autograd {
namespace {

struct Addcdiv {
  static constexpr const char* kName = "safe_ops::AddcdivBackward";
  static constexpr const schema::TwinnedOperator& kOp = schema::addcdiv;
  static constexpr const schema::TwinnedOperator& kInplaceOp = schema::addcdiv_inplace;
  static constexpr const schema::Operator& kBackwardOp = schema::addcdiv_backward;
  template <typename T>
  using Grad1 = formulas::AddcdivGradTensor1<T>;
  template <typename T>
  using Grad2 = formulas::AddcdivGradTensor2<T>;
  static constexpr bool kGrad2ReadsT2 = true;
  static bool saves_t1(bool /*need1*/, bool need2) { return need2; }
  static bool saves_t2(bool need1, bool need2) { return need1 || need2; }
  // d(t1/t2) = t1_t/t2 − t1·t2_t/t2²
  static at::Tensor tangent(const at::Tensor& t1, const at::Tensor& t2, const at::Tensor& t1_t,
                            const at::Tensor& t2_t) {
    return add_tangents(t1_t.defined() ? t1_t / t2 : at::Tensor(),
                        t2_t.defined() ? -(t2_t * (t1 / t2) / t2) : at::Tensor());
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  impl_with_twin(m, Addcdiv::kOp, value_op_autograd<Addcdiv>);
  impl_with_twin(m, Addcdiv::kInplaceOp, value_op_inplace_autograd<Addcdiv>);
}

}  // namespace safe_ops::autograd
