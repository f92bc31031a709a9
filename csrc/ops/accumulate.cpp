// accumulate: Σ w_i·x_i over K broadcastable tensors in one pass, and its backward ops (scale_many, dot_many).
#include "core/op_support.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ExpandUtils.h>
#include <ATen/native/TypeProperties.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <vector>

namespace safe_ops {
namespace {

void check_tensor_list(at::TensorList tensors, const char* name) {
  TORCH_CHECK(!tensors.empty(), "safe_ops.", name, " expects a non-empty list of tensors");
}

void check_weights_tensor(const at::Tensor& weights, int64_t k, const char* name) {
  TORCH_CHECK(weights.dim() == 1 && weights.size(0) == k, "safe_ops.", name,
              ": weights must be a 1-D tensor with one entry per tensor (", k, "), got shape ", weights.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(weights.scalar_type()), "safe_ops.", name,
                   ": weights must be a floating tensor, got ", weights.scalar_type());
}

// Torch's promotion for Σ weights[i]·tensors[i]: the tensors as they are, each weights[i] as a 0-dim tensor; in
// place, the target `out` joins as torch's in-place ops see it.
at::ScalarType accumulate_dtype(const at::Tensor& out, at::TensorList tensors, const at::Tensor& weights) {
  at::native::ResultTypeState state{};
  if (out.defined()) state = at::native::update_result_type_state(out, state);
  for (const auto& t : tensors) state = at::native::update_result_type_state(t, state);
  if (weights.defined()) {
    state.zeroResult = state.zeroResult == at::ScalarType::Undefined
                           ? weights.scalar_type()
                           : at::promoteTypes(state.zeroResult, weights.scalar_type());
  }
  return at::native::result_type(state);
}

// The weights as the kernels read them: float64, contiguous, on the op's device.
at::Tensor device_weights(const at::Tensor& weights, c10::Device device) {
  return weights.to(device, at::kDouble).contiguous();
}

at::Tensor accumulate_into(const at::Tensor& out, at::TensorList tensors, std::optional<at::ArrayRef<double>> weights,
                           const at::Tensor& weights_tensor, const char* name) {
  check_tensor_list(tensors, name);
  const int64_t k = static_cast<int64_t>(tensors.size());
  if (weights.has_value()) {
    TORCH_CHECK(static_cast<int64_t>(weights->size()) == k, "safe_ops.", name, ": got ", weights->size(),
                " weights for ", k, " tensors");
  }
  if (weights_tensor.defined()) check_weights_tensor(weights_tensor, k, name);
  const at::ScalarType dtype = accumulate_dtype(out, tensors, weights_tensor);
  check_result_dtype(dtype, name);
  if (out.defined() && dtype != out.scalar_type()) {
    std::vector<at::Tensor> all{out};
    all.insert(all.end(), tensors.begin(), tensors.end());
    // Computed in the common dtype and cast into the target, where torch.can_cast allows, as torch's in-place ops.
    TORCH_CHECK(at::canCast(dtype, out.scalar_type()), "result type ", dtype,
                " can't be cast to the desired output type ", out.scalar_type());
    std::vector<double> w{1.0};
    if (weights.has_value()) w.insert(w.end(), weights->begin(), weights->end());
    const at::Tensor wt =
        weights_tensor.defined() ? at::cat({at::ones({1}, weights_tensor.options()), weights_tensor}) : at::Tensor();
    const auto all_weights = weights.has_value() ? std::optional<at::ArrayRef<double>>(w) : std::nullopt;
    out.copy_(accumulate_into(at::Tensor(), all, all_weights, wt, name));
    return out;
  }

  // In place, `out` is both the output and the first input, with weight 1. On the stack for the common small K
  // (heap vectors were a visible part of a 4K-element call).
  c10::SmallVector<at::Tensor, 9> inputs;
  c10::SmallVector<double, 9> w;
  if (out.defined()) {
    inputs.push_back(out);
    w.push_back(1.0);
  }
  for (int64_t i = 0; i < k; ++i) {
    const double wi = weights.has_value() ? (*weights)[i] : 1.0;
    // The same tensor listed again (e.g. [x] * K with weights 0..K-1) is read once with its weights summed.
    // Host weights only: a weights tensor would need a device-to-host sync to do this.
    if (!weights_tensor.defined()) {
      auto same =
          std::find_if(inputs.begin(), inputs.end(), [&](const at::Tensor& t) { return t.is_same(tensors[i]); });
      if (same != inputs.end() && !(out.defined() && same == inputs.begin())) {
        w[same - inputs.begin()] += wi;
        continue;
      }
    }
    inputs.push_back(tensors[i]);
    w.push_back(wi);
  }
  LinearCoeffs coeffs;
  coeffs.weights = w;
  if (weights_tensor.defined()) {
    const c10::Device device = out.defined() ? out.device() : common_device(tensors);
    at::Tensor wt = device_weights(weights_tensor, device);
    if (out.defined()) wt = at::cat({at::ones({1}, wt.options()), wt});
    coeffs.weights_tensor = wt;
  }
  return run_linear_combination(out, inputs, coeffs, dtype);
}

at::Tensor accumulate(at::TensorList tensors, std::optional<at::ArrayRef<double>> weights) {
  return accumulate_into(at::Tensor(), tensors, weights, at::Tensor(), "accumulate");
}
at::Tensor accumulate_weights_tensor(at::TensorList tensors, const at::Tensor& weights) {
  return accumulate_into(at::Tensor(), tensors, std::nullopt, weights, "accumulate");
}
void accumulate_(at::Tensor& out, at::TensorList tensors, std::optional<at::ArrayRef<double>> weights) {
  accumulate_into(out, tensors, weights, at::Tensor(), "accumulate_inplace");
}
void accumulate_weights_tensor_(at::Tensor& out, at::TensorList tensors, const at::Tensor& weights) {
  accumulate_into(out, tensors, std::nullopt, weights, "accumulate_inplace");
}

// [s_i·grad for each scale], reading grad once. Outputs take grad's dtype and layout.
std::vector<at::Tensor> scale_many_impl(const at::Tensor& grad, at::ArrayRef<double> scales,
                                        const at::Tensor& scales_tensor) {
  const size_t k = scales_tensor.defined() ? static_cast<size_t>(scales_tensor.numel()) : scales.size();
  check_result_dtype(grad.scalar_type(), "scale_many");
  OpDeviceGuard guard(grad.device());
  LinearCoeffs coeffs;
  coeffs.weights = scales;
  if (scales_tensor.defined()) coeffs.weights_tensor = device_weights(scales_tensor, grad.device());
  std::vector<at::Tensor> outputs(k);
  if (k == 0) return outputs;
  at::TensorIterator iter = make_iterator(outputs, {grad});
  if (iter.numel() > 0) scale_many_stub(grad.device().type())(iter, coeffs);
  for (size_t i = 0; i < k; ++i) outputs[i] = iter.output(static_cast<int64_t>(i));
  return outputs;
}

std::vector<at::Tensor> scale_many(const at::Tensor& grad, at::ArrayRef<double> scales) {
  return scale_many_impl(grad, scales, at::Tensor());
}
std::vector<at::Tensor> scale_many_weights_tensor(const at::Tensor& grad, const at::Tensor& scales) {
  TORCH_CHECK(scales.dim() == 1, "safe_ops.scale_many: scales must be 1-D");
  return scale_many_impl(grad, {}, scales);
}

// [⟨grad, x_i⟩ for each x_i], x_i broadcast to grad's shape, accumulated in float64 in one pass.
at::Tensor dot_many(const at::Tensor& grad, at::TensorList tensors) {
  check_result_dtype(grad.scalar_type(), "dot_many");
  OpDeviceGuard guard(grad.device());
  at::Tensor result = at::zeros({static_cast<int64_t>(tensors.size())}, grad.options().dtype(at::kDouble));
  if (tensors.empty()) return result;
  std::vector<at::Tensor> inputs{grad};
  for (const auto& t : tensors) {
    TORCH_CHECK(at::is_expandable_to(t.sizes(), grad.sizes()), "safe_ops.dot_many: a tensor of shape ", t.sizes(),
                " does not broadcast to grad's shape ", grad.sizes());
    inputs.push_back(prepare_operand(t, grad.scalar_type(), grad.device()));
  }
  at::TensorIterator iter = make_iterator({}, inputs);
  if (iter.numel() > 0) dot_many_stub(grad.device().type())(iter, result);
  return result;
}

void register_impls(torch::Library& m) {
  m.impl(schema::accumulate.impl_name, accumulate);
  m.impl(schema::accumulate_weights_tensor.impl_name, accumulate_weights_tensor);
  m.impl(schema::accumulate_inplace.impl_name, accumulate_);
  m.impl(schema::accumulate_inplace_weights_tensor.impl_name, accumulate_weights_tensor_);
  m.impl(schema::scale_many.impl_name, scale_many);
  m.impl(schema::scale_many_weights_tensor.impl_name, scale_many_weights_tensor);
  m.impl(schema::dot_many.impl_name, dot_many);
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
