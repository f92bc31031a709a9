#include "core/op_support.h"

#include <ATen/native/TypeProperties.h>
#include <c10/util/SmallVector.h>

#include "generated/kernel_dtypes.h"

namespace safe_ops {

void check_result_dtype(at::ScalarType dtype, const char* op_name) {
  TORCH_CHECK_TYPE(is_kernel_dtype(dtype), "safe_ops.", op_name, " supports ", kKernelDtypeNames,
                   " results, but the inputs promote to ", dtype, ". Use the torch op for other dtypes.");
}

at::ScalarType promoted_dtype(at::TensorList operands) {
  at::native::ResultTypeState state{};
  for (const auto& t : operands) state = at::native::update_result_type_state(t, state);
  return at::native::result_type(state);
}

c10::Device common_device(at::TensorList tensors) {
  for (const auto& t : tensors) {
    if (!(t.dim() == 0 && t.is_cpu())) return t.device();
  }
  return tensors.empty() ? c10::Device(c10::kCPU) : tensors[0].device();
}

at::Tensor prepare_operand(const at::Tensor& t, at::ScalarType dtype, c10::Device device) {
  const bool move = t.dim() == 0 && t.is_cpu() && !device.is_cpu();
  if (!move && t.scalar_type() == dtype) return t;
  return t.to(move ? device : t.device(), dtype);
}

at::TensorIterator make_iterator(at::TensorList outputs, at::TensorList inputs) {
  at::TensorIteratorConfig config;
  config.set_check_mem_overlap(true).check_all_same_dtype(true).resize_outputs(false);
  for (const auto& out : outputs) config.add_output(out);
  for (const auto& in : inputs) config.add_const_input(in);
  return config.build();
}

void check_inplace_result(const at::Tensor& self, at::ScalarType result_dtype, const char* op_name) {
  TORCH_CHECK(self.scalar_type() == result_dtype, "safe_ops.", op_name, ": the result dtype ", result_dtype,
              " differs from the dtype of the tensor written in place (", self.scalar_type(),
              "). The in-place-when-safe wrappers (safe_ops.", op_name, ") return a new tensor in this case.");
}

at::Tensor run_linear_combination(const at::Tensor& out, at::TensorList xs, const LinearCoeffs& coeffs,
                                  at::ScalarType dtype) {
  const c10::Device device = out.defined() ? out.device() : common_device(xs);
  OpDeviceGuard guard(device);
  c10::SmallVector<at::Tensor, 4> inputs;
  for (const auto& x : xs) inputs.push_back(prepare_operand(x, dtype, device));
  at::TensorIterator iter = make_iterator({out}, inputs);
  if (iter.numel() > 0) linear_combination_stub(device.type())(iter, coeffs);
  return iter.output(0);
}

std::vector<at::Tensor> run_pointwise(const DispatchStub<PointwiseFn>& stub, const at::Tensor& out, int noutputs,
                                      at::TensorList inputs, double scalar, c10::Device device) {
  OpDeviceGuard guard(device);
  const std::vector<at::Tensor> outputs =
      out.defined() ? std::vector<at::Tensor>{out} : std::vector<at::Tensor>(static_cast<size_t>(noutputs));
  at::TensorIterator iter = make_iterator(outputs, inputs);
  if (iter.numel() > 0) stub(device.type())(iter, formulas::Scalars{scalar, 0.0});
  std::vector<at::Tensor> results;
  results.reserve(outputs.size());
  for (int i = 0; i < iter.noutputs(); ++i) results.push_back(iter.output(i));
  return results;
}

at::Tensor run_value_op(const DispatchStub<PointwiseFn>& stub, const at::Tensor& out, const at::Tensor& self,
                        const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value, const char* name) {
  const at::ScalarType dtype = promoted_dtype({self, t1, t2});
  check_result_dtype(dtype, name);
  if (out.defined()) check_inplace_result(out, dtype, name);
  const c10::Device device = out.defined() ? out.device() : common_device({self, t1, t2});
  const std::vector<at::Tensor> inputs{prepare_operand(self, dtype, device), prepare_operand(t1, dtype, device),
                                       prepare_operand(t2, dtype, device)};
  return run_pointwise(stub, out, 1, inputs, value.toDouble(), device)[0];
}

std::tuple<at::Tensor, at::Tensor> run_value_op_backward(const ValueOpBackwardStubs& stubs, const at::Tensor& grad,
                                                         const std::optional<at::Tensor>& t1,
                                                         const std::optional<at::Tensor>& t2, const at::Scalar& value,
                                                         std::array<bool, 2> output_mask, const char* name) {
  const at::ScalarType dtype = grad.scalar_type();
  check_result_dtype(dtype, name);
  const c10::Device device = grad.device();
  const bool want1 = output_mask[0], want2 = output_mask[1];
  const bool has1 = t1.has_value() && t1->defined(), has2 = t2.has_value() && t2->defined();
  TORCH_CHECK(!want1 || has2, name, ": the gradient of tensor1 needs tensor2");
  TORCH_CHECK(!want2 || (has1 && (has2 || !stubs.grad2_reads_t2)), name, ": the gradient of tensor2 needs tensor1",
              stubs.grad2_reads_t2 ? " and tensor2" : "");
  if (!want1 && !want2) return {at::Tensor(), at::Tensor()};
  const double v = value.toDouble();
  auto operand = [&](const std::optional<at::Tensor>& t) { return prepare_operand(*t, dtype, device); };
  if (want1 && want2) {
    auto grads = run_pointwise(stubs.both, at::Tensor(), 2, {grad, operand(t1), operand(t2)}, v, device);
    return {grads[0], grads[1]};
  }
  if (want1) return {run_pointwise(stubs.grad1, at::Tensor(), 1, {grad, operand(t2)}, v, device)[0], at::Tensor()};
  const std::vector<at::Tensor> inputs = stubs.grad2_reads_t2 ? std::vector<at::Tensor>{grad, operand(t1), operand(t2)}
                                                              : std::vector<at::Tensor>{grad, operand(t1)};
  return {at::Tensor(), run_pointwise(stubs.grad2, at::Tensor(), 1, inputs, v, device)[0]};
}

}  // namespace safe_ops
