// Torch's own op for the calls the hand-written kernels do not compute. Each op with a torch twin (Op.twin in
// safe_ops/_declarations.py) has aten's schema, so the twin takes the same arguments. Which calls go to it is the
// declared rule DEFER_TO_TORCH (csrc/generated/kernel_dtypes.h: operands of a dtype without a kernel, complex or
// bool numbers, in-place operands of another dtype than the target, ...), applied here and nowhere else in C++; the
// fake kernels apply the same declaration through safe_ops/_twin.py. Registered for the Autograd key too, where the
// twin records torch's own autograd node and forward-mode formula (complex gradients need conjugates the kernels'
// formulas do not take), so those calls behave exactly as torch's op.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/Scalar.h>
#include <torch/library.h>

#include <type_traits>

#include "generated/kernel_dtypes.h"
#include "generated/operators.h"

namespace safe_ops {

// Whether a call goes to torch's op, by DEFER_TO_TORCH: `inplace` for an in-place kernel (its first tensor is the
// target), `promotes` for an op with torch's type promotion (Op.dtype "promote").
class TwinCheck {
 public:
  TwinCheck(bool inplace, bool promotes) : inplace_(inplace), promotes_(promotes) {}
  void see(const at::Tensor& t) {
    const at::ScalarType dtype = t.scalar_type();
    if (DeferToTorch::kOtherDtype && !is_kernel_dtype(dtype)) use_ = true;
    if (t.requires_grad()) requires_grad_ = true;
    if (!has_target_) {
      target_ = dtype;
      has_target_ = true;
    } else if (dtype != target_) {
      mixed_ = true;
      if (DeferToTorch::kInplaceMixed && inplace_) use_ = true;
      // torch's lerp takes a 0-dim weight of another dtype into its promotion (and raises for the rest).
      if (DeferToTorch::kUnpromotedMixed && !promotes_) use_ = true;
    }
  }
  void see(const c10::Scalar& s) {
    if ((DeferToTorch::kComplexNumber && s.isComplex()) || (DeferToTorch::kBoolNumber && s.isBoolean())) use_ = true;
  }
  template <typename T>
  void see(const T&) {}
  // Operands of several dtypes in a graph: torch's backward formulas round operand products in the operands' own
  // dtypes (addcmul's tensor1·value in bfloat16), so its gradients are torch's only from torch's formulas.
  bool use() const {
    return use_ || (DeferToTorch::kRecordedMixed && mixed_ && requires_grad_ && c10::GradMode::is_enabled());
  }

 private:
  bool inplace_;
  bool promotes_;
  bool mixed_ = false;
  bool requires_grad_ = false;
  bool has_target_ = false;
  at::ScalarType target_ = at::kFloat;
  bool use_ = false;
};

template <typename Sig>
struct WithTwin;

// A functional kernel: the twin returns the result.
template <typename... Args>
struct WithTwin<at::Tensor(Args...)> {
  at::Tensor (*kernel)(Args...);
  c10::TypedOperatorHandle<at::Tensor(Args...)> twin;
  bool promotes;
  at::Tensor operator()(Args... args) const {
    TwinCheck check(false, promotes);
    (check.see(args), ...);
    return check.use() ? twin.call(args...) : kernel(args...);
  }
};

// An in-place kernel (returns nothing): the twin is torch's in-place op, which returns its target.
template <typename... Args>
struct WithTwin<void(Args...)> {
  void (*kernel)(Args...);
  c10::TypedOperatorHandle<at::Tensor&(Args...)> twin;
  bool promotes;
  void operator()(Args... args) const {
    TwinCheck check(true, promotes);
    (check.see(args), ...);
    if (check.use()) {
      twin.call(args...);
    } else {
      kernel(args...);
    }
  }
};

// m.impl(op, kernel) where the kernels compute the call, torch's op of the same schema (op.twin) elsewhere. Only
// operators of ops declared with a twin are TwinnedOperators (csrc/generated/operators.h).
template <typename Ret, typename... Args>
void impl_with_twin(torch::Library& m, const schema::TwinnedOperator& op, Ret (*kernel)(Args...)) {
  using TwinSig = std::conditional_t<std::is_void_v<Ret>, at::Tensor&(Args...), at::Tensor(Args...)>;
  auto twin = c10::Dispatcher::singleton().findSchemaOrThrow(op.twin, op.overload);
  m.impl(op.impl_name, WithTwin<Ret(Args...)>{kernel, twin.template typed<TwinSig>(), op.promotes});
}

}  // namespace safe_ops
