// add and sub: out = self ± alpha·other, one linear-combination pass. `other` may be a Python number.
#include "core/op_support.h"
#include "core/twin.h"

#include <ATen/native/TypeProperties.h>
#include <ATen/ops/add.h>
#include <ATen/ops/sub.h>

#include <array>

namespace safe_ops {
namespace {

// at::result_type without its dispatcher call (two of them were ~0.1 us of a 4K add): computed once per call.
at::ScalarType result_dtype(const at::Tensor& self, const at::Tensor& other) { return promoted_dtype({self, other}); }
at::ScalarType result_dtype(const at::Tensor& self, const at::Scalar& other) {
  return at::native::result_type(
      at::native::update_result_type_state(other, at::native::update_result_type_state(self, {})));
}

at::Tensor add_tensor_impl(const at::Tensor& self, const at::Tensor& other, double alpha, at::ScalarType dtype,
                           const char* name) {
  check_result_dtype(dtype, name);
  const std::array<double, 2> w{1.0, alpha};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  return run_linear_combination(at::Tensor(), {self, other}, coeffs, dtype);
}

at::Tensor add_scalar_impl(const at::Tensor& self, const at::Scalar& other, double alpha, at::ScalarType dtype,
                           const char* name) {
  check_result_dtype(dtype, name);
  const std::array<double, 1> w{1.0};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  coeffs.has_scalar = true;
  coeffs.scalar_value = other.toDouble();
  coeffs.scalar_alpha = alpha;
  return run_linear_combination(at::Tensor(), {self}, coeffs, dtype);
}

void add_tensor_inplace_impl(at::Tensor& self, const at::Tensor& other, double alpha, at::ScalarType dtype,
                             const char* name) {
  check_result_dtype(dtype, name);
  check_inplace_result(self, dtype, name);
  const std::array<double, 2> w{1.0, alpha};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  run_linear_combination(self, {self, other}, coeffs, dtype);
}

void add_scalar_inplace_impl(at::Tensor& self, const at::Scalar& other, double alpha, at::ScalarType dtype,
                             const char* name) {
  check_result_dtype(dtype, name);
  check_inplace_result(self, dtype, name);
  const std::array<double, 1> w{1.0};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  coeffs.has_scalar = true;
  coeffs.scalar_value = other.toDouble();
  coeffs.scalar_alpha = alpha;
  run_linear_combination(self, {self}, coeffs, dtype);
}

// Where torch's bits depend on its loop structure rather than on the formula, torch's kernel computes the call:
// with alpha != 1, float16/bfloat16 (torch's scalar loop, which takes the last elements of each vectorised row,
// rounds alpha·other in half precision) and a broadcast operand (torch's vectorised loop over a stride-0 operand
// leaves a tail of unfused elements). A number `other` is the same case as a broadcast one.
bool alpha_needs_torch_loop(const at::Tensor& self, const at::Tensor* other, const at::Scalar& alpha,
                            at::ScalarType dtype) {
  if (alpha.toDouble() == 1.0) return false;
  if (dtype == at::kHalf || dtype == at::kBFloat16 || other == nullptr) return true;
  auto broadcast = [](const at::Tensor& t) {
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (t.stride(d) == 0 && t.size(d) > 1) return true;
    }
    return false;
  };
  return !self.sizes().equals(other->sizes()) || broadcast(self) || broadcast(*other);
}

// sub's alpha negated as torch negates it: an integer alpha as an integer (-0 is +0).
double negated(const at::Scalar& alpha) {
  return alpha.isIntegral(false) ? static_cast<double>(-alpha.toLong()) : -alpha.toDouble();
}

// A number `other` rounded to the result dtype first, as torch's kernels read it (a float16 tensor + 0.1 adds
// 0.1 in float16).
at::Scalar as_result_dtype(const at::Scalar& other, at::ScalarType dtype) {
  if (dtype == at::kHalf) return static_cast<double>(static_cast<float>(other.to<at::Half>()));
  if (dtype == at::kBFloat16) return static_cast<double>(static_cast<float>(other.to<at::BFloat16>()));
  return other;
}

at::Tensor add_tensor(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, &other, alpha, dtype)) return at::add(self, other, alpha);
  return add_tensor_impl(self, other, alpha.toDouble(), dtype, "add");
}
at::Tensor sub_tensor(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, &other, alpha, dtype)) return at::sub(self, other, alpha);
  return add_tensor_impl(self, other, negated(alpha), dtype, "sub");
}
at::Tensor add_scalar(const at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, nullptr, alpha, dtype)) return at::add(self, other, alpha);
  return add_scalar_impl(self, as_result_dtype(other, dtype), alpha.toDouble(), dtype, "add");
}
at::Tensor sub_scalar(const at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, nullptr, alpha, dtype)) return at::sub(self, other, alpha);
  return add_scalar_impl(self, as_result_dtype(other, dtype), negated(alpha), dtype, "sub");
}
void add_tensor_(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, &other, alpha, dtype)) {
    self.add_(other, alpha);
    return;
  }
  add_tensor_inplace_impl(self, other, alpha.toDouble(), dtype, "add_inplace");
}
void sub_tensor_(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, &other, alpha, dtype)) {
    self.sub_(other, alpha);
    return;
  }
  add_tensor_inplace_impl(self, other, negated(alpha), dtype, "sub_inplace");
}
void add_scalar_(at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, nullptr, alpha, dtype)) {
    self.add_(other, alpha);
    return;
  }
  add_scalar_inplace_impl(self, as_result_dtype(other, dtype), alpha.toDouble(), dtype, "add_inplace");
}
void sub_scalar_(at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  const at::ScalarType dtype = result_dtype(self, other);
  if (alpha_needs_torch_loop(self, nullptr, alpha, dtype)) {
    self.sub_(other, alpha);
    return;
  }
  add_scalar_inplace_impl(self, as_result_dtype(other, dtype), negated(alpha), dtype, "sub_inplace");
}

void register_impls(torch::Library& m) {
  impl_with_twin(m, schema::add_Tensor, add_tensor);
  impl_with_twin(m, schema::add_Scalar, add_scalar);
  impl_with_twin(m, schema::sub_Tensor, sub_tensor);
  impl_with_twin(m, schema::sub_Scalar, sub_scalar);
  impl_with_twin(m, schema::add_inplace_Tensor, add_tensor_);
  impl_with_twin(m, schema::add_inplace_Scalar, add_scalar_);
  impl_with_twin(m, schema::sub_inplace_Tensor, sub_tensor_);
  impl_with_twin(m, schema::sub_inplace_Scalar, sub_scalar_);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
