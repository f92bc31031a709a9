// The hot loops, one set per device type: csrc/cpu/kernels.cpp and csrc/cuda/kernels.cu.
//
// The device-agnostic op code (csrc/*.cpp) checks arguments, picks the result dtype, converts operands to it,
// and builds an at::TensorIterator (broadcasting, output allocation with torch's stride rules). A kernel gets
// that iterator: every operand has the same floating dtype and the iterator's shape. Kernels compute in
// at::opmath_type<scalar_t> and round once. Operand order is part of each kernel's contract, given below.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/ArrayRef.h>

namespace at {
struct TensorIteratorBase;
}

namespace safe_ops {

// Coefficients of out = Σ_i w_i·x_i [+ scalar_alpha·scalar_value].
struct LinearCoeffs {
  c10::ArrayRef<double> weights;  // used when weights_tensor is undefined
  at::Tensor weights_tensor;      // 1-D float64, contiguous, on the iterator's device; read by the kernel
  bool has_scalar = false;        // add.Scalar: the Python number, converted straight to opmath (as torch does)
  double scalar_value = 0;
  double scalar_alpha = 1;
};

struct DeviceKernels {
  // operands [out, x_0 .. x_{K-1}] (K >= 1): out = Σ w_i·x_i (+ scalar term).
  void (*linear_combination)(at::TensorIteratorBase& iter, const LinearCoeffs& coeffs);
  // operands [out_0 .. out_{K-1}, g]: out_i = s_i·g, with s_i from coeffs (scalar term unused).
  void (*scale_many)(at::TensorIteratorBase& iter, const LinearCoeffs& scales);
  // operands [g, x_0 .. x_{K-1}] (no outputs): result[i] += Σ_j g[j]·x_i[j].
  // result: K-element float64 tensor on the device, zero-initialised by the caller.
  void (*dot_many)(at::TensorIteratorBase& iter, const at::Tensor& result);
  // operands [out, a, b, c]: out = a + (value·b)·c   (torch.addcmul's order).
  void (*addcmul)(at::TensorIteratorBase& iter, double value);
  // operands [out, g, t]: out = (value·g)·t   (one of addcmul's operand gradients), or
  // operands [gb, gc, g, b, c]: gb = (value·g)·c, gc = (value·g)·b   (both, in one pass).
  void (*addcmul_backward)(at::TensorIteratorBase& iter, double value);
  // operands [out, a, b] with a scalar weight, or [out, a, b, w]: out = lerp(a, b, w) with torch's
  // formula (a + w·(b−a) if |w| < 0.5, else b − (b−a)·(1−w)).
  void (*lerp)(at::TensorIteratorBase& iter, double weight);
  // lerp with a tensor weight, backward. mask bits: 1 = grad_input, 2 = grad_end, 4 = grad_weight.
  // operands: outputs [ga? gb? gw?] in that order for the set bits, then inputs g, w (if bit 1 or 2), a, b (if 4).
  // ga = g·(1−w), gb = g·w, gw = g·(b−a).
  void (*lerp_backward)(at::TensorIteratorBase& iter, int mask);
};

// Device files register their kernels at load time (a static RegisterKernels object).
struct RegisterKernels {
  RegisterKernels(c10::DeviceType type, const DeviceKernels& kernels);
};

// The kernels for `type`; raises a clear error when this build has none (e.g. CUDA tensors, CPU-only build).
const DeviceKernels& kernels_for(c10::DeviceType type);

}  // namespace safe_ops
