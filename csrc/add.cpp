// add and sub: out = self ± alpha·other, one linear-combination pass. `other` may be a Python number.
#include "ops.h"
#include "twin.h"

#include <ATen/ops/result_type.h>

#include <array>

namespace safe_ops {
namespace {

at::Tensor add_tensor_impl(const at::Tensor& self, const at::Tensor& other, double alpha, const char* name) {
  const at::ScalarType dtype = at::result_type(self, other);
  check_result_dtype(dtype, name);
  const std::array<double, 2> w{1.0, alpha};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  return run_linear_combination(at::Tensor(), {self, other}, coeffs, dtype);
}

at::Tensor add_scalar_impl(const at::Tensor& self, const at::Scalar& other, double alpha, const char* name) {
  const at::ScalarType dtype = at::result_type(self, other);
  check_result_dtype(dtype, name);
  const std::array<double, 1> w{1.0};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  coeffs.has_scalar = true;
  coeffs.scalar_value = other.toDouble();
  coeffs.scalar_alpha = alpha;
  return run_linear_combination(at::Tensor(), {self}, coeffs, dtype);
}

void add_tensor_inplace_impl(at::Tensor& self, const at::Tensor& other, double alpha, const char* name) {
  const at::ScalarType dtype = at::result_type(self, other);
  check_result_dtype(dtype, name);
  check_inplace_result(self, dtype, name);
  const std::array<double, 2> w{1.0, alpha};
  LinearCoeffs coeffs;
  coeffs.weights = w;
  run_linear_combination(self, {self, other}, coeffs, dtype);
}

void add_scalar_inplace_impl(at::Tensor& self, const at::Scalar& other, double alpha, const char* name) {
  const at::ScalarType dtype = at::result_type(self, other);
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

at::Tensor add_tensor(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  return add_tensor_impl(self, other, alpha.toDouble(), "add");
}
at::Tensor sub_tensor(const at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  return add_tensor_impl(self, other, -alpha.toDouble(), "sub");
}
at::Tensor add_scalar(const at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  return add_scalar_impl(self, other, alpha.toDouble(), "add");
}
at::Tensor sub_scalar(const at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  return add_scalar_impl(self, other, -alpha.toDouble(), "sub");
}
void add_tensor_(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  add_tensor_inplace_impl(self, other, alpha.toDouble(), "add_inplace");
}
void sub_tensor_(at::Tensor& self, const at::Tensor& other, const at::Scalar& alpha) {
  add_tensor_inplace_impl(self, other, -alpha.toDouble(), "sub_inplace");
}
void add_scalar_(at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  add_scalar_inplace_impl(self, other, alpha.toDouble(), "add_inplace");
}
void sub_scalar_(at::Tensor& self, const at::Scalar& other, const at::Scalar& alpha) {
  add_scalar_inplace_impl(self, other, -alpha.toDouble(), "sub_inplace");
}

void register_impls(torch::Library& m) {
  impl_with_twin(m, "add.Tensor", add_tensor);
  impl_with_twin(m, "add.Scalar", add_scalar);
  impl_with_twin(m, "sub.Tensor", sub_tensor);
  impl_with_twin(m, "sub.Scalar", sub_scalar);
  impl_with_twin(m, "add_inplace.Tensor", add_tensor_);
  impl_with_twin(m, "add_inplace.Scalar", add_scalar_);
  impl_with_twin(m, "sub_inplace.Tensor", sub_tensor_);
  impl_with_twin(m, "sub_inplace.Scalar", sub_scalar_);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
