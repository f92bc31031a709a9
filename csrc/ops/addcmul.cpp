// addcmul: out = self + value·tensor1·tensor2 (torch.addcmul), and its backward op.
#include "core/op_support.h"
#include "core/twin.h"

namespace safe_ops {
namespace {

at::Tensor addcmul(const at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  return run_value_op(addcmul_stub, at::Tensor(), self, t1, t2, value, "addcmul");
}
void addcmul_(at::Tensor& self, const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value) {
  run_value_op(addcmul_stub, self, self, t1, t2, value, "addcmul_inplace");
}

// (value·grad·tensor2, value·grad·tensor1): one formula serves either gradient alone.
std::tuple<at::Tensor, at::Tensor> addcmul_backward(const at::Tensor& grad, const std::optional<at::Tensor>& t1,
                                                    const std::optional<at::Tensor>& t2, const at::Scalar& value,
                                                    std::array<bool, 2> output_mask) {
  static const ValueOpBackwardStubs stubs{addcmul_grad_one_stub, addcmul_grad_one_stub, addcmul_grads_stub, false};
  return run_value_op_backward(stubs, grad, t1, t2, value, output_mask, "addcmul_backward");
}

void register_impls(torch::Library& m) {
  impl_with_twin(m, schema::addcmul, addcmul);
  impl_with_twin(m, schema::addcmul_inplace, addcmul_);
  m.impl(schema::addcmul_backward.impl_name, addcmul_backward);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
