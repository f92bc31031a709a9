// Device-agnostic op code shared by csrc/ops/<op>.cpp: argument checks, result dtype, operand preparation and the
// TensorIterator that hands the operands to a device kernel (csrc/core/dispatch_stubs.h).
#pragma once

#include <ATen/TensorIterator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "core/dispatch_stubs.h"
#include "generated/operators.h"  // schema::<op>: the operators' names, from safe_ops/_declarations.py

namespace safe_ops {

// Raises TypeError unless `dtype` is one the kernels support (KERNEL_DTYPES: csrc/generated/kernel_dtypes.h).
void check_result_dtype(at::ScalarType dtype, const char* op_name);

// Whether lerp's number weight is exactly 1 in the kernel's opmath (float32 for every dtype but float64). There
// torch's result has a zero sign that depends on its loop, not its formula: its vectorised body computes
// (w−1)·(end−self) + end, its scalar tail end − (end−self)·(1−w), and for end = −0 the two zeros differ. Such
// calls run torch's own kernel (csrc/ops/lerp.cpp, csrc/ops/foreach.cpp), so the bits stay torch's.
inline bool lerp_weight_is_one(double weight, at::ScalarType dtype) {
  return (dtype == at::kDouble ? weight : static_cast<double>(static_cast<float>(weight))) == 1.0;
}

// torch's promotion over all the operands (at::result_type takes two): dimensioned tensors first, 0-dim ones
// only where their category is higher.
at::ScalarType promoted_dtype(at::TensorList operands);

// The device the op runs on: that of the first tensor that is not a 0-dim CPU tensor (torch lets such tensors
// join CUDA operands, as numbers do).
c10::Device common_device(at::TensorList tensors);

// `t` converted to `dtype` and, if it is a 0-dim CPU tensor, moved to `device`; `t` itself when nothing changes.
at::Tensor prepare_operand(const at::Tensor& t, at::ScalarType dtype, c10::Device device);

// A TensorIterator over [outputs..., inputs...]. It borrows the tensors: they must outlive it. Undefined outputs are
// allocated with torch's elementwise layout rules; defined outputs (in-place ops) must already have the broadcast
// shape: they are never resized.
at::TensorIterator make_iterator(at::TensorList outputs, at::TensorList inputs);

// Device guard for the op's device, a no-op on the CPU.
struct OpDeviceGuard {
  explicit OpDeviceGuard(c10::Device device) {
    if (!device.is_cpu()) guard_.reset_device(device);
  }
  c10::OptionalDeviceGuard guard_;
};

// Raises the error an in-place op gives when the result cannot be written into `self` (shape or dtype).
void check_inplace_result(const at::Tensor& self, at::ScalarType result_dtype, const char* op_name);

// Runs a pointwise formula's kernel (csrc/core/formulas.h) on the device of `inputs`: `noutputs` new outputs at the
// broadcast shape, or `out` written in place (then noutputs is 1 and out must have the broadcast shape). The
// inputs must already have the kernel's dtype and device (prepare_operand). Returns the outputs.
std::vector<at::Tensor> run_pointwise(const DispatchStub<PointwiseFn>& stub, const at::Tensor& out, int noutputs,
                                      at::TensorList inputs, double scalar, c10::Device device);

// self + value·f(tensor1, tensor2) for a formula of that shape (addcmul and its kin): torch's promotion over the three
// operands; `out` undefined: a new tensor; defined: written in place (it must have the result's dtype and shape).
at::Tensor run_value_op(const DispatchStub<PointwiseFn>& stub, const at::Tensor& out, const at::Tensor& self,
                        const at::Tensor& t1, const at::Tensor& t2, const at::Scalar& value, const char* name);

// The backward op of such an op: (gradient of tensor1, of tensor2) at grad's shape for the mask's set entries,
// from the stubs for tensor1's alone [g, t2], tensor2's alone [g, t1, t2] and both in one pass [g, t1, t2].
// Each gradient reads only the operands its formula takes.
struct ValueOpBackwardStubs {
  const DispatchStub<PointwiseFn>& grad1;
  const DispatchStub<PointwiseFn>& grad2;
  const DispatchStub<PointwiseFn>& both;
  bool grad2_reads_t2;  // d/dt2 reads t2 too, or (addcmul) only t1, through grad1's [g, t] formula
};
std::tuple<at::Tensor, at::Tensor> run_value_op_backward(const ValueOpBackwardStubs& stubs, const at::Tensor& grad,
                                                         const std::optional<at::Tensor>& t1,
                                                         const std::optional<at::Tensor>& t2, const at::Scalar& value,
                                                         std::array<bool, 2> output_mask, const char* name);

// out = Σ coeffs.w_i·xs[i] (+ scalar term) in `dtype`; `out` undefined: allocated and returned; defined: written
// in place (it must have the broadcast shape and `dtype`).
at::Tensor run_linear_combination(const at::Tensor& out, at::TensorList xs, const LinearCoeffs& coeffs,
                                  at::ScalarType dtype);

}  // namespace safe_ops

// Registers the same device-agnostic implementations for both device keys; the kernels differ per device
// through their DispatchStubs.
#define SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)            \
  TORCH_LIBRARY_IMPL(safe_ops, CPU, m) { register_impls(m); } \
  TORCH_LIBRARY_IMPL(safe_ops, CUDA, m) { register_impls(m); }
