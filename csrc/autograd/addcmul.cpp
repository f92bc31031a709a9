// Autograd for addcmul: d/dt1 = value·grad·t2, d/dt2 = value·grad·t1. Saves t2 only if t1 needs a gradient, t1
// only if t2 does.
#include "value_op.h"

namespace safe_ops::autograd {
namespace {

struct Addcmul {
  static constexpr const char* kName = "safe_ops::AddcmulBackward";
  static constexpr const char* kOp = "safe_ops::addcmul";
  static constexpr const char* kInplaceOp = "safe_ops::addcmul_inplace";
  static constexpr const char* kBackwardOp = "safe_ops::addcmul_backward";
  template <typename T>
  using Grad1 = formulas::AddcmulGradOne<T>;
  template <typename T>
  using Grad2 = formulas::AddcmulGradOne<T>;
  static constexpr bool kGrad2ReadsT2 = false;
  static bool saves_t1(bool /*need1*/, bool need2) { return need2; }
  static bool saves_t2(bool need1, bool /*need2*/) { return need1; }
};

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  m.impl("addcmul", value_op_autograd<Addcmul>);
  m.impl("addcmul_inplace", value_op_inplace_autograd<Addcmul>);
}

}  // namespace safe_ops::autograd
