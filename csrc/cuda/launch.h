// The host side of the elementwise CUDA kernels, written once over an executor `Exec` that runs a kernel body on
// a grid: the CUDA one launches the __global__ wrappers (elementwise_kernels.cu), the host simulation walks the grid on
// the CPU with checked memory (csrc/cuda_on_host/). Exec provides:
//   static constexpr c10::DeviceType kDevice;            the device the iterators' tensors are on
//   int resident_blocks() const;                         blocks resident at once (grid-stride loops)
//   void note(const at::TensorBase&) const;              a buffer the kernels may touch (bounds checks)
//   auto guard(c10::Device) const;                       the device guard
//   at::Tensor scratch(int64_t n, at::ScalarType) const; a buffer on the device
//   void contiguous<scalar_t>(blocks, ptrs, n, vectorised, op), strided<scalar_t>(blocks, ptrs, calc, n, op),
//   void sum_partials(partial, blocks, result, n)        the kernels (elementwise_body.h)
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <ATen/cuda/detail/OffsetCalculator.cuh>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "cuda/elementwise_body.h"

namespace safe_ops {
namespace cuda_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Iterator operand index of each slot, -1 for an unused slot.
template <int N>
struct Slots {
  std::array<int, N> operand;
  Slots() { operand.fill(-1); }
  Slots& range(int first_slot, int first_operand, int count) {
    for (int i = 0; i < count; ++i) operand[first_slot + i] = first_operand + i;
    return *this;
  }
};

// The usual layout: op.num_out() consecutive outputs from iterator operand first_output, then op.num_in()
// consecutive inputs from first_input.
template <typename Op>
Slots<Op::kOut + Op::kIn> slots_for(const Op& op, int first_output, int first_input) {
  return Slots<Op::kOut + Op::kIn>().range(0, first_output, op.num_out()).range(Op::kOut, first_input, op.num_in());
}

// Grid-stride loops: no more blocks than can be resident at once.
template <typename Exec>
int blocks_for(const Exec& exec, int64_t work_items) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(work_items, kThreads), exec.resident_blocks())));
}

// One launch of `op` over `iter` (contiguous, or small enough for 32-bit offsets: see for_each_piece). An op with
// a block reduction (DotMany) gets a partial-sums buffer for this launch's blocks, summed into its result after.
template <typename scalar_t, typename Op, typename Exec>
void launch(const Exec& exec, const at::TensorIteratorBase& iter, const Slots<Op::kOut + Op::kIn>& slots, Op op) {
  constexpr int N = Op::kOut + Op::kIn;
  for (int s = 0; s < N; ++s) {
    const bool active = s < Op::kOut ? s < op.num_out() : s - Op::kOut < op.num_in();
    TORCH_INTERNAL_ASSERT(active == (slots.operand[s] >= 0), "safe_ops: operand slot ", s, " mismatch");
  }
  const int64_t n = iter.numel();
  if (n == 0) return;

  Ptrs<N> ptrs{};
  bool aligned = true;
  for (int s = 0; s < N; ++s) {
    if (slots.operand[s] < 0) continue;
    exec.note(iter.tensor_base(slots.operand[s]));
    ptrs.p[s] = static_cast<char*>(iter.data_ptr(slots.operand[s]));
    aligned = aligned && reinterpret_cast<uintptr_t>(ptrs.p[s]) % kVecBytes == 0;
  }
  const bool contiguous = iter.is_contiguous();
  constexpr int kVec = kVecBytes / sizeof(scalar_t);
  const int blocks = blocks_for(exec, contiguous ? (aligned ? ceil_div(n, kVec) : n) : ceil_div(n, kStridedIlp));
  at::Tensor partial;
  if constexpr (Op::kBlockReduce) {
    partial = exec.scratch(int64_t(blocks) * kGroup, at::kDouble);
    op.partial = partial.template data_ptr<double>();
  }

  if (contiguous) {
    exec.template contiguous<scalar_t>(blocks, ptrs, n, aligned, op);
  } else {
    TORCH_INTERNAL_ASSERT(iter.can_use_32bit_indexing());
    const std::vector<int64_t> zero_strides(std::max<int64_t>(iter.ndim(), 1), 0);  // unused slots
    std::array<const int64_t*, N> strides;
    for (int s = 0; s < N; ++s) {
      strides[s] = slots.operand[s] >= 0 ? iter.strides(slots.operand[s]).data() : zero_strides.data();
    }
    const OffsetCalculator<N> calc(iter.ndim(), iter.shape().data(), strides.data());  // byte strides
    exec.template strided<scalar_t>(blocks, ptrs, calc, n, op);
  }
  if constexpr (Op::kBlockReduce) exec.sum_partials(op.partial, blocks, op.result, op.n);
}

// Runs f on iter, or on 32-bit-indexable pieces of it. Contiguous iterators stay whole (64-bit path).
template <typename F>
void for_each_piece(at::TensorIteratorBase& iter, const F& f) {
  if (iter.is_contiguous() || iter.can_use_32bit_indexing()) {
    f(iter);
    return;
  }
  for (auto& piece : iter.with_32bit_indexing()) f(piece);
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Checks the iterator is what the op code promises (one floating dtype, on Exec's device), sets the device and
// calls body(TypeTag<scalar_t>{}).
template <typename Exec, typename F>
void dispatch_floating(const Exec& exec, at::TensorIteratorBase& iter, const F& body) {
  const at::ScalarType dtype = iter.dtype(0);
  for (int i = 0; i < iter.ntensors(); ++i) {
    TORCH_INTERNAL_ASSERT(iter.dtype(i) == dtype, "safe_ops: mixed operand dtypes reached a CUDA kernel");
    TORCH_INTERNAL_ASSERT(iter.device(i).type() == Exec::kDevice, "safe_ops: an operand on ", iter.device(i),
                          " reached a CUDA kernel");
  }
  [[maybe_unused]] const auto guard = exec.guard(iter.device(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "safe_ops_cuda", [&] { body(TypeTag<scalar_t>{}); });
}

}  // namespace cuda_detail
}  // namespace safe_ops
