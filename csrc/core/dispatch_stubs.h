// The device kernels, registered by name per device type (ATen's DispatchStub, small): csrc/cpu/elementwise_kernels.cpp
// and csrc/cuda/elementwise_kernels.cu each register their function for every stub declared here, by stub name, so
// there is no table filled by position. The device-agnostic op code (csrc/ops/*.cpp) checks arguments, picks the result
// dtype, converts operands to it, builds an at::TensorIterator and calls stub(device)(iter, ...). A kernel gets
// operands of one floating dtype at the iterator's shape, computes in at::opmath_type and rounds once.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstddef>
#include <vector>

#include "core/formulas.h"
#include "generated/foreach_ops.h"  // SAFE_OPS_FOREACH_OPS, from safe_ops/_declarations.py

namespace at {
struct TensorIteratorBase;
}

namespace safe_ops {

template <typename Fn>
class DispatchStub {
 public:
  // constexpr: the table is initialised before any static registration runs, whatever the link order.
  explicit constexpr DispatchStub(const char* name) : name_(name), kernels_{} {}

  void set(c10::DeviceType type, Fn kernel) { kernels_[static_cast<size_t>(type)] = kernel; }

  // The kernel for `type`; a clear error when this build has none (CUDA tensors on a CPU-only build).
  Fn operator()(c10::DeviceType type) const {
    const Fn kernel = kernels_[static_cast<size_t>(type)];
    TORCH_CHECK(kernel != nullptr, "safe_ops has no ", c10::DeviceTypeName(type), " kernel for ", name_,
                " in this build. For CUDA, rebuild with nvcc available (SAFE_OPS_CUDA=1): "
                "pip install --no-build-isolation -e .");
    return kernel;
  }

 private:
  const char* name_;
  std::array<Fn, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)> kernels_;
};

#define SAFE_OPS_DECLARE_STUB(stub, fn_type) extern DispatchStub<fn_type> stub
// constinit only checks what the constexpr constructor already gives (constant initialisation); C++17 has no such
// word, and torch 2.11's cpp_extension compiles extensions as C++17.
#if defined(__cpp_constinit)
#define SAFE_OPS_CONSTINIT constinit
#else
#define SAFE_OPS_CONSTINIT
#endif
#define SAFE_OPS_DEFINE_STUB(stub) SAFE_OPS_CONSTINIT decltype(stub) stub(#stub)
// In a device file, at namespace scope: binds `kernel` to `stub` for `device` (CPU, CUDA) at load time.
#define SAFE_OPS_REGISTER_KERNEL(stub, device, kernel) \
  static const bool stub##_##device##_registered = (stub.set(c10::DeviceType::device, kernel), true)

// Coefficients of out = Σ_i w_i·x_i [+ scalar_alpha·scalar_value].
struct LinearCoeffs {
  c10::ArrayRef<double> weights;  // used when weights_tensor is undefined
  at::Tensor weights_tensor;      // 1-D float64, contiguous, on the iterator's device; read by the kernel
  bool has_scalar = false;        // add.Scalar: the Python number, converted straight to opmath (as torch does)
  double scalar_value = 0;
  double scalar_alpha = 1;
};

using LinearFn = void (*)(at::TensorIteratorBase& iter, const LinearCoeffs& coeffs);
using DotManyFn = void (*)(at::TensorIteratorBase& iter, const at::Tensor& result);
using PointwiseFn = void (*)(at::TensorIteratorBase& iter, const formulas::Scalars& scalars);

// operands [out, x_0 .. x_{K-1}] (K >= 1): out = Σ w_i·x_i (+ scalar term), summed left to right.
SAFE_OPS_DECLARE_STUB(linear_combination_stub, LinearFn);
// operands [out_0 .. out_{K-1}, g]: out_i = s_i·g, with s_i from the coefficients (scalar term unused).
SAFE_OPS_DECLARE_STUB(scale_many_stub, LinearFn);
// operands [g, x_0 .. x_{K-1}] (no outputs): result[i] += Σ_j g[j]·x_i[j].
// result: K-element float64 tensor on the device, zero-initialised by the caller.
SAFE_OPS_DECLARE_STUB(dot_many_stub, DotManyFn);
// One stub per pointwise formula (csrc/core/formulas.h): <name>_stub.
#define SAFE_OPS_DECLARE_POINTWISE_STUB(name, formula) SAFE_OPS_DECLARE_STUB(name##_stub, PointwiseFn);
SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_DECLARE_POINTWISE_STUB)
#undef SAFE_OPS_DECLARE_POINTWISE_STUB

// One group of a foreach call (csrc/ops/foreach.cpp): members of one dtype whose operands share one floating dtype
// (possibly another: an fp32 EMA of a bf16 model), each member and its operands non-overlapping and dense with
// the same strides, so member i is a flat run of numel elements. The kernel computes member[i] =
// formula(member[i], operands...) in opmath with the formula built from member i's number, rounding once.
struct ForeachGroup {
  int noperands = 0;  // operands per member, after the member itself
  at::ScalarType dtype = at::kFloat;
  at::ScalarType operand_dtype = at::kFloat;
  std::vector<at::Tensor> members;   // written in place
  std::vector<at::Tensor> operands;  // member-major, noperands per member
  std::vector<double> scalars;       // member i's number, when scalar_tensor is undefined
  at::Tensor scalar_tensor;          // else: contiguous float64 values on the device, read by the kernel
  std::vector<int64_t> index;        // member i's position in scalar_tensor
};
using ForeachFn = void (*)(const ForeachGroup& group);
// One stub per foreach op: foreach_<base>_stub (the list: SAFE_OPS_FOREACH_OPS, generated).
#define SAFE_OPS_DECLARE_FOREACH_STUB(base, formula, nlists) SAFE_OPS_DECLARE_STUB(foreach_##base##_stub, ForeachFn);
SAFE_OPS_FOREACH_OPS(SAFE_OPS_DECLARE_FOREACH_STUB)
#undef SAFE_OPS_DECLARE_FOREACH_STUB

}  // namespace safe_ops
