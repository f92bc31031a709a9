// Autograd for addcmul: d/dt1 = value·grad·t2, d/dt2 = value·grad·t1. Saves t2 only if t1 needs a gradient, t1
// only if t2 does. Forward mode: t_self + value·(t1_t·t2 + t1·t2_t).
#include "autograd/value_op.h"
#include "core/twin.h"

namespace safe_ops::autograd {
namespace {

struct Addcmul {
  static constexpr const char* kName = "safe_ops::AddcmulBackward";
  static constexpr const schema::TwinnedOperator& kOp = schema::addcmul;
  static constexpr const schema::TwinnedOperator& kInplaceOp = schema::addcmul_inplace;
  static constexpr const schema::Operator& kBackwardOp = schema::addcmul_backward;
  template <typename T>
  using Grad1 = formulas::AddcmulGradOne<T>;
  template <typename T>
  using Grad2 = formulas::AddcmulGradOne<T>;
  static constexpr bool kGrad2ReadsT2 = false;
  static bool saves_t1(bool /*need1*/, bool need2) { return need2; }
  static bool saves_t2(bool need1, bool /*need2*/) { return need1; }
  // d(t1·t2) = t1_t·t2 + t1·t2_t
  static at::Tensor tangent(const at::Tensor& t1, const at::Tensor& t2, const at::Tensor& t1_t,
                            const at::Tensor& t2_t) {
    return add_tangents(t1_t.defined() ? t1_t * t2 : at::Tensor(), t2_t.defined() ? t1 * t2_t : at::Tensor());
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  impl_with_twin(m, Addcmul::kOp, value_op_autograd<Addcmul>);
  impl_with_twin(m, Addcmul::kInplaceOp, value_op_inplace_autograd<Addcmul>);
}

}  // namespace safe_ops::autograd
