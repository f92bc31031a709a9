// lerp: out = self + weight·(end − self) with torch.lerp's formula; weight a number or a tensor.
#include "core/op_support.h"
#include "core/twin.h"

#include <ATen/ops/lerp.h>

#include <cmath>

namespace safe_ops {
namespace {

// torch.lerp does not promote: every tensor operand must have self's dtype (the twin rule sends calls with several
// dtypes to torch's op before they come here; the check keeps the kernels safe from any other caller).
void check_same_dtype(const at::Tensor& self, const at::Tensor& other, const char* what) {
  TORCH_CHECK(self.scalar_type() == other.scalar_type(), "expected dtype ", self.scalar_type(), " for `", what,
              "` but got dtype ", other.scalar_type());
}

at::Tensor lerp_into(const at::Tensor& out, const at::Tensor& self, const at::Tensor& end,
                     const at::Tensor& weight_tensor, double weight, const char* name) {
  check_same_dtype(self, end, "end");
  // torch takes a 0-dim weight of another dtype (a number-like tensor) and casts it to self's.
  if (weight_tensor.defined() && weight_tensor.dim() != 0) check_same_dtype(self, weight_tensor, "weight");
  const at::ScalarType dtype = self.scalar_type();
  check_result_dtype(dtype, name);
  const c10::Device device = out.defined() ? out.device()
                                           : (weight_tensor.defined() ? common_device({self, end, weight_tensor})
                                                                      : common_device({self, end}));
  std::vector<at::Tensor> inputs{prepare_operand(self, dtype, device), prepare_operand(end, dtype, device)};
  if (weight_tensor.defined()) {
    inputs.push_back(prepare_operand(weight_tensor, dtype, device));
    return run_pointwise(lerp_tensor_weight_stub, out, 1, inputs, 0.0, device)[0];
  }
  if (lerp_weight_is_one(weight, dtype)) {
    if (!out.defined()) return at::lerp(self, end, weight);
    at::Tensor result = out;
    return at::lerp_out(result, self, end, weight);
  }
  // A number weight picks the formula's form once, comparing in opmath as the kernel would.
  const double w = dtype == at::kDouble ? weight : static_cast<double>(static_cast<float>(weight));
  const auto& stub = std::abs(w) < 0.5 ? lerp_small_weight_stub : lerp_large_weight_stub;
  return run_pointwise(stub, out, 1, inputs, weight, device)[0];
}

at::Tensor lerp_scalar(const at::Tensor& self, const at::Tensor& end, const at::Scalar& weight) {
  return lerp_into(at::Tensor(), self, end, at::Tensor(), weight.toDouble(), "lerp");
}
at::Tensor lerp_tensor(const at::Tensor& self, const at::Tensor& end, const at::Tensor& weight) {
  // A weight of another dtype (torch promotes a 0-dim one) never comes here: DEFER_TO_TORCH gives lerp's calls with
  // operands of several dtypes to torch's op (csrc/core/twin.h).
  return lerp_into(at::Tensor(), self, end, weight, 0.0, "lerp");
}
void lerp_scalar_(at::Tensor& self, const at::Tensor& end, const at::Scalar& weight) {
  lerp_into(self, self, end, at::Tensor(), weight.toDouble(), "lerp_inplace");
}
void lerp_tensor_(at::Tensor& self, const at::Tensor& end, const at::Tensor& weight) {
  lerp_into(self, self, end, weight, 0.0, "lerp_inplace");
}

// Gradients of lerp with a tensor weight, at grad's shape, for the mask's set entries, in one pass:
// grad·(1−weight), grad·weight, grad·(end−self). self/end are needed only for the third, weight for the others.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lerp_backward(const at::Tensor& grad,
                                                             const std::optional<at::Tensor>& self,
                                                             const std::optional<at::Tensor>& end,
                                                             const std::optional<at::Tensor>& weight,
                                                             std::array<bool, 3> output_mask) {
  static const std::array<const DispatchStub<PointwiseFn>*, 8> stubs{nullptr,
                                                                     &lerp_backward_1_stub,
                                                                     &lerp_backward_2_stub,
                                                                     &lerp_backward_3_stub,
                                                                     &lerp_backward_4_stub,
                                                                     &lerp_backward_5_stub,
                                                                     &lerp_backward_6_stub,
                                                                     &lerp_backward_7_stub};
  const at::ScalarType dtype = grad.scalar_type();
  check_result_dtype(dtype, "lerp_backward");
  const c10::Device device = grad.device();
  const int mask = (output_mask[0] ? 1 : 0) | (output_mask[1] ? 2 : 0) | (output_mask[2] ? 4 : 0);
  if (mask == 0) return {at::Tensor(), at::Tensor(), at::Tensor()};
  auto require = [](const std::optional<at::Tensor>& t, const char* what) -> const at::Tensor& {
    TORCH_CHECK(t.has_value() && t->defined(), "lerp_backward: the requested gradients need ", what);
    return *t;
  };
  // The formula's operand order (csrc/core/formulas.h LerpBackward): g, then self and end, then weight.
  std::vector<at::Tensor> inputs{grad};
  if (mask & 4) {
    inputs.push_back(prepare_operand(require(self, "self"), dtype, device));
    inputs.push_back(prepare_operand(require(end, "end"), dtype, device));
  }
  if (mask & 3) inputs.push_back(prepare_operand(require(weight, "weight"), dtype, device));
  const int noutputs = (mask & 1) + ((mask >> 1) & 1) + ((mask >> 2) & 1);
  const std::vector<at::Tensor> outputs = run_pointwise(*stubs[mask], at::Tensor(), noutputs, inputs, 0.0, device);
  std::array<at::Tensor, 3> grads;
  int next = 0;
  for (int i = 0; i < 3; ++i) {
    if (output_mask[i]) grads[i] = outputs[next++];
  }
  return {grads[0], grads[1], grads[2]};
}

void register_impls(torch::Library& m) {
  impl_with_twin(m, schema::lerp_Scalar, lerp_scalar);
  impl_with_twin(m, schema::lerp_Tensor, lerp_tensor);
  impl_with_twin(m, schema::lerp_inplace_Scalar, lerp_scalar_);
  impl_with_twin(m, schema::lerp_inplace_Tensor, lerp_tensor_);
  m.impl(schema::lerp_backward.impl_name, lerp_backward);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
