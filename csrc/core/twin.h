// Torch's own op for the calls the hand-written kernels do not compute. Each op with a torch twin (declared in
// safe_ops/_declarations.py: add, sub, addcmul, addcdiv, lerp) has aten's schema, so the twin takes the same
// arguments: integer, bool and complex operands, complex or bool numbers, and in-place writes whose operands have
// another dtype than the target (torch casts the result into it) go to aten::<op> / aten::<op>_ unchanged. Registered
// for the Autograd key too, where the twin records torch's own autograd node and forward-mode formula (complex
// gradients need conjugates the kernels' formulas do not take), so those dtypes behave exactly as torch's op.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/Scalar.h>
#include <torch/library.h>

#include <string>
#include <type_traits>

namespace safe_ops {

inline bool is_kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Whether a call goes to torch's op: an operand of a dtype without a kernel, a complex or bool number, (in place)
// an operand whose dtype differs from the target's, or operands of several dtypes that autograd records.
class TwinCheck {
 public:
  explicit TwinCheck(bool inplace) : inplace_(inplace) {}
  void see(const at::Tensor& t) {
    const at::ScalarType dtype = t.scalar_type();
    if (!is_kernel_dtype(dtype)) use_ = true;
    if (t.requires_grad()) requires_grad_ = true;
    if (!has_target_) {
      target_ = dtype;
      has_target_ = true;
    } else if (dtype != target_) {
      mixed_ = true;
      if (inplace_) use_ = true;
    }
  }
  void see(const c10::Scalar& s) {
    if (s.isComplex() || s.isBoolean()) use_ = true;
  }
  template <typename T>
  void see(const T&) {}
  // Operands of several dtypes in a graph: torch's backward formulas round operand products in the operands' own
  // dtypes (addcmul's tensor1·value in bfloat16), so its gradients are torch's only from torch's formulas.
  bool use() const { return use_ || (mixed_ && requires_grad_ && c10::GradMode::is_enabled()); }

 private:
  bool inplace_;
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
  at::Tensor operator()(Args... args) const {
    TwinCheck check(false);
    (check.see(args), ...);
    return check.use() ? twin.call(args...) : kernel(args...);
  }
};

// An in-place kernel (returns nothing): the twin is torch's in-place op, which returns its target.
template <typename... Args>
struct WithTwin<void(Args...)> {
  void (*kernel)(Args...);
  c10::TypedOperatorHandle<at::Tensor&(Args...)> twin;
  void operator()(Args... args) const {
    TwinCheck check(true);
    (check.see(args), ...);
    if (check.use()) {
      twin.call(args...);
    } else {
      kernel(args...);
    }
  }
};

// m.impl(name, kernel) where the kernels compute the call, torch's op of the same schema elsewhere. name:
// "add.Tensor" (twin aten::add.Tensor) or "add_inplace.Tensor" (twin aten::add_.Tensor).
template <typename Ret, typename... Args>
void impl_with_twin(torch::Library& m, const std::string& name, Ret (*kernel)(Args...)) {
  const size_t dot = name.find('.');
  std::string op = name.substr(0, dot);
  const std::string overload = dot == std::string::npos ? "" : name.substr(dot + 1);
  const std::string suffix = "_inplace";
  if (op.size() > suffix.size() && op.compare(op.size() - suffix.size(), suffix.size(), suffix) == 0) {
    op = op.substr(0, op.size() - suffix.size()) + "_";
  }
  using TwinSig = std::conditional_t<std::is_void_v<Ret>, at::Tensor&(Args...), at::Tensor(Args...)>;
  auto twin = c10::Dispatcher::singleton().findSchemaOrThrow(("aten::" + op).c_str(), overload.c_str());
  m.impl(name.c_str(), WithTwin<Ret(Args...)>{kernel, twin.template typed<TwinSig>()});
}

}  // namespace safe_ops
