// addcmul: out = self + value·tensor1·tensor2 (torch.addcmul), and its backward op.
#include "ops.h"

namespace safe_ops {
namespace {

at::Tensor addcmul_into(const at::Tensor& out, const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2,
                        const at::Scalar& value, const char* name) {
  const at::ScalarType dtype = promoted_dtype({self, t1, t2});
  check_result_dtype(dtype, name);
  if (out.defined()) check_inplace_result(out, dtype, name);
  const c10::Device device = out.defined() ? out.device() : common_device({self, t1, t2});
  const std::vector<at::Tensor> inputs{prepare_operand(self, dtype, device), prepare_operand(t1, dtype, device),
                                       prepare_operand(t2, dtype, device)};
  return run_pointwise(addcmul_stub, out, 1, inputs, value.toDouble(), device)[0];
}

at::Tensor addcmul(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  return addcmul_into(at::Tensor(), self, t1, t2, value, "addcmul");
}
void addcmul_(at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  addcmul_into(self, self, t1, t2, value, "addcmul_inplace");
}

// (value·grad·tensor2, value·grad·tensor1) at grad's shape, for the mask's set entries; one pass when both.
std::tuple<at::Tensor, at::Tensor> addcmul_backward(const at::Tensor& grad, const std::optional<at::Tensor>& t1,
                                                    const std::optional<at::Tensor>& t2, const at::Scalar& value,
                                                    std::array<bool, 2> output_mask) {
  const at::ScalarType dtype = grad.scalar_type();
  check_result_dtype(dtype, "addcmul_backward");
  const c10::Device device = grad.device();
  const bool want1 = output_mask[0], want2 = output_mask[1];
  TORCH_CHECK(!want1 || (t2.has_value() && t2->defined()), "addcmul_backward: grad of tensor1 needs tensor2");
  TORCH_CHECK(!want2 || (t1.has_value() && t1->defined()), "addcmul_backward: grad of tensor2 needs tensor1");
  if (!want1 && !want2) return {at::Tensor(), at::Tensor()};
  const double v = value.toDouble();
  if (want1 && want2) {
    const std::vector<at::Tensor> inputs{grad, prepare_operand(*t1, dtype, device), prepare_operand(*t2, dtype, device)};
    auto grads = run_pointwise(addcmul_grads_stub, at::Tensor(), 2, inputs, v, device);
    return {grads[0], grads[1]};
  }
  const std::vector<at::Tensor> inputs{grad, prepare_operand(want1 ? *t2 : *t1, dtype, device)};
  at::Tensor g = run_pointwise(addcmul_grad_one_stub, at::Tensor(), 1, inputs, v, device)[0];
  return want1 ? std::make_tuple(g, at::Tensor()) : std::make_tuple(at::Tensor(), g);
}

void register_impls(torch::Library& m) {
  m.impl("addcmul", addcmul);
  m.impl("addcmul_inplace", addcmul_);
  m.impl("addcmul_backward", addcmul_backward);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
