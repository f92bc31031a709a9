// addcdiv: out = self + value·tensor1/tensor2 (torch.addcdiv: Adam's update), and its backward op.
#include "core/op_support.h"
#include "core/twin.h"

namespace safe_ops {
namespace {

at::Tensor addcdiv(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  return run_value_op(addcdiv_stub, at::Tensor(), self, t1, t2, value, "addcdiv");
}
void addcdiv_(at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  run_value_op(addcdiv_stub, self, self, t1, t2, value, "addcdiv_inplace");
}

// (grad·value/tensor2, −grad·value·tensor1/tensor2²).
std::tuple<at::Tensor, at::Tensor> addcdiv_backward(const at::Tensor& grad, const std::optional<at::Tensor>& t1,
                                                    const std::optional<at::Tensor>& t2, const at::Scalar& value,
                                                    std::array<bool, 2> output_mask) {
  static const ValueOpBackwardStubs stubs{addcdiv_grad_tensor1_stub, addcdiv_grad_tensor2_stub, addcdiv_grads_stub,
                                          true};
  return run_value_op_backward(stubs, grad, t1, t2, value, output_mask, "addcdiv_backward");
}

void register_impls(torch::Library& m) {
  impl_with_twin(m, schema::addcdiv, addcdiv);
  impl_with_twin(m, schema::addcdiv_inplace, addcdiv_);
  m.impl(schema::addcdiv_backward.impl_name, addcdiv_backward);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
