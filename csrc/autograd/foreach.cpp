// Autograd for the fused foreach kernels (foreach_<base>_inplace): they record no graph and compute no tangent,
// so they take only members autograd has nothing to do with (safe_ops.foreach_<base>_ sends the others to the
// per-tensor op) and refuse anything else rather than leave a gradient or a tangent silently wrong. Like torch's
// in-place ops they bump each member's version, so a node that saved the memory through an alias (a detach(), a
// view) raises torch's error at backward instead of reading the new values. Registered here, the call also skips
// torch's boxed autograd fallback, which copied every list into IValues (~0.2 us a member).
#include "autograd/common.h"
#include "generated/foreach_ops.h"

#include <c10/core/GradMode.h>

namespace safe_ops::autograd {
namespace {

using ForeachSig = void(at::TensorList, at::TensorList, at::ArrayRef<double>, const std::optional<at::Tensor>&);

void check_no_autograd(const at::Tensor& t, bool grad_mode, const char* role, size_t index, const char* base) {
  TORCH_CHECK(!(grad_mode && t.requires_grad()), "safe_ops::foreach_", base, "_inplace: ", role, " ", index,
              " requires grad, and this fused kernel records no autograd graph; call safe_ops.foreach_", base,
              "_ (it sends such members to the per-tensor op)");
  TORCH_CHECK(!has_tangent(t), "safe_ops::foreach_", base, "_inplace: ", role, " ", index,
              " has a forward-mode tangent, which this fused kernel does not compute; call safe_ops.foreach_", base,
              "_ (it sends such members to the per-tensor op)");
}

void foreach_autograd(const c10::TypedOperatorHandle<ForeachSig>& op, const char* base, at::TensorList self,
                      at::TensorList operands, at::ArrayRef<double> scalars,
                      const std::optional<at::Tensor>& scalar_tensor) {
  const bool grad_mode = c10::GradMode::is_enabled();
  for (size_t i = 0; i < self.size(); ++i) check_no_autograd(self[i], grad_mode, "member", i, base);
  for (size_t i = 0; i < operands.size(); ++i) check_no_autograd(operands[i], grad_mode, "operand", i, base);
  if (scalar_tensor.has_value()) check_no_autograd(*scalar_tensor, grad_mode, "per-member number tensor", 0, base);
  call_below_autograd(op, self, operands, scalars, scalar_tensor);
  for (const auto& t : self) torch::autograd::impl::bump_version(t);
}

#define SAFE_OPS_FOREACH_AUTOGRAD(base, formula, nlists)                                                     \
  void foreach_##base##_autograd(at::TensorList self, at::TensorList operands, at::ArrayRef<double> scalars, \
                                 const std::optional<at::Tensor>& scalar_tensor) {                           \
    static const auto op = find_op<ForeachSig>(schema::foreach_##base##_inplace);                            \
    foreach_autograd(op, #base, self, operands, scalars, scalar_tensor);                                     \
  }
SAFE_OPS_FOREACH_OPS(SAFE_OPS_FOREACH_AUTOGRAD)
#undef SAFE_OPS_FOREACH_AUTOGRAD

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
#define SAFE_OPS_FOREACH_REGISTER(base, formula, nlists) \
  m.impl(schema::foreach_##base##_inplace.impl_name, foreach_##base##_autograd);
  SAFE_OPS_FOREACH_OPS(SAFE_OPS_FOREACH_REGISTER)
#undef SAFE_OPS_FOREACH_REGISTER
}

}  // namespace safe_ops::autograd
