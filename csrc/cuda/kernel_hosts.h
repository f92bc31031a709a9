// The CUDA kernels' host functions (what the DispatchStubs call), over an executor (launch.h): elementwise_kernels.cu
// registers them with the CUDA executor, the host simulation (csrc/cuda_on_host/) with its own.
#pragma once

#include <ATen/ops/empty.h>

#include <algorithm>

#include "core/dispatch_stubs.h"
#include "cuda/launch.h"

namespace safe_ops {
namespace cuda_detail {

inline void check_coeffs(const at::TensorIteratorBase& iter, const LinearCoeffs& c, int64_t k) {
  if (c.weights_tensor.defined()) {
    const at::Tensor& w = c.weights_tensor;
    TORCH_INTERNAL_ASSERT(w.scalar_type() == at::kDouble && w.dim() == 1 && w.is_contiguous() && w.numel() == k &&
                              w.device() == iter.device(0),
                          "safe_ops: weights tensor must be a contiguous float64 [", k, "] tensor on ", iter.device(0));
  } else {
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(c.weights.size()) == k, "safe_ops: expected ", k, " weights, got ",
                          c.weights.size());
  }
}

template <typename opmath_t, typename Exec>
GroupWeights<opmath_t> group_weights(const Exec& exec, const LinearCoeffs& c, int first, int count) {
  GroupWeights<opmath_t> w{};
  w.n = count;
  w.device = nullptr;
  if (c.weights_tensor.defined()) {
    exec.note(c.weights_tensor);
    w.device = c.weights_tensor.const_data_ptr<double>() + first;
  } else {
    for (int i = 0; i < count; ++i) w.host[i] = static_cast<opmath_t>(c.weights[first + i]);
  }
  return w;
}

// Runs a fixed-arity op (a template over the storage type) over the whole iterator: outputs then inputs, in
// iterator order.
template <template <typename> class Op, typename Exec, typename... Args>
void run_pointwise(const Exec& exec, at::TensorIteratorBase& iter, Args... args) {
  if (iter.numel() == 0) return;
  dispatch_floating(exec, iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const Op<scalar_t> op(args...);
    TORCH_INTERNAL_ASSERT(iter.noutputs() == op.num_out() && iter.ninputs() == op.num_in(),
                          "safe_ops: unexpected operand count");
    const auto slots = slots_for(op, 0, op.num_out());
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) { launch<scalar_t>(exec, piece, slots, op); });
  });
}

template <template <typename...> class Formula, typename Exec>
void pointwise_kernel(const Exec& exec, at::TensorIteratorBase& iter, const formulas::Scalars& scalars) {
  run_pointwise<FormulaOp<Formula>::template Op>(exec, iter, scalars);
}

template <typename Exec>
void linear_combination(const Exec& exec, at::TensorIteratorBase& iter, const LinearCoeffs& coeffs) {
  const int k = iter.ninputs();
  TORCH_INTERNAL_ASSERT(iter.noutputs() == 1 && k >= 1, "safe_ops: linear_combination expects [out, x_0..]");
  check_coeffs(iter, coeffs, k);
  if (iter.numel() == 0) return;
  dispatch_floating(exec, iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using opmath_t = at::opmath_type<scalar_t>;
    const int groups = static_cast<int>(ceil_div(k, kGroup));
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      at::Tensor acc;  // running sum between groups
      if (groups > 1) {
        acc = exec.scratch(piece.numel(), c10::CppTypeToScalarType<opmath_t>::value);
        exec.note(acc);
      }
      opmath_t* acc_ptr = groups > 1 ? acc.data_ptr<opmath_t>() : nullptr;
      for (int g = 0; g < groups; ++g) {
        const int first = g * kGroup, n = std::min(kGroup, k - first);
        const bool last = g + 1 == groups;
        const LinearCombination<opmath_t> op{group_weights<opmath_t>(exec, coeffs, first, n),
                                             g > 0 ? acc_ptr : nullptr,
                                             last ? nullptr : acc_ptr,
                                             last && coeffs.has_scalar,
                                             static_cast<opmath_t>(coeffs.scalar_alpha),
                                             static_cast<opmath_t>(coeffs.scalar_value)};
        launch<scalar_t>(exec, piece, slots_for(op, 0, 1 + first), op);
      }
    });
  });
}

template <typename Exec>
void scale_many(const Exec& exec, at::TensorIteratorBase& iter, const LinearCoeffs& scales) {
  const int k = iter.noutputs();
  TORCH_INTERNAL_ASSERT(k >= 1 && iter.ninputs() == 1, "safe_ops: scale_many expects [out_0.., g]");
  check_coeffs(iter, scales, k);
  if (iter.numel() == 0) return;
  dispatch_floating(exec, iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      for (int first = 0; first < k; first += kGroup) {
        const int n = std::min(kGroup, k - first);
        const ScaleMany<scalar_t> op{group_weights<at::opmath_type<scalar_t>>(exec, scales, first, n)};
        launch<scalar_t>(exec, piece, slots_for(op, first, k), op);
      }
    });
  });
}

template <typename Exec>
void dot_many(const Exec& exec, at::TensorIteratorBase& iter, const at::Tensor& result) {
  const int k = iter.ninputs() - 1;
  TORCH_INTERNAL_ASSERT(iter.noutputs() == 0 && k >= 1, "safe_ops: dot_many expects [g, x_0..] and no outputs");
  TORCH_INTERNAL_ASSERT(result.scalar_type() == at::kDouble && result.is_contiguous() && result.numel() == k &&
                            result.device() == iter.device(0),
                        "safe_ops: dot_many result must be a contiguous float64 [", k, "] tensor on ", iter.device(0));
  if (iter.numel() == 0) return;
  exec.note(result);
  dispatch_floating(exec, iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using op_t = DotMany<at::opmath_type<scalar_t>>;
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      for (int first = 0; first < k; first += kGroup) {
        const int n = std::min(kGroup, k - first);
        const op_t op{result.data_ptr<double>() + first, nullptr, n};
        launch<scalar_t>(exec, piece, Slots<op_t::kIn>().range(0, 0, 1).range(1, 1 + first, n), op);
      }
    });
  });
}

}  // namespace cuda_detail
}  // namespace safe_ops
