// One launcher for every safe_ops CUDA kernel.
//
// A kernel is a small "op" functor with a fixed maximum arity (kOut outputs, kIn inputs per launch). The launcher
// loads the active inputs of one element in opmath, calls the op, and rounds and stores its outputs once. Ops
// with a variable operand count (K tensors) are run in groups of at most kGroup operands per launch.
//
// Op interface:
//   static constexpr int kOut, kIn;             slots per launch (slot s < kOut: output, else input)
//   C10_HOST_DEVICE int num_out() const;         active slots this launch: outputs [0, num_out()),
//   C10_HOST_DEVICE int num_in() const;          inputs [kOut, kOut + num_in()); the rest are never touched
//   struct State; __device__ State init() const; per-thread state (e.g. weights read once, dot accumulators)
//   __device__ void operator()(State&, int64_t idx, const opmath_t* in, opmath_t* out) const;
//   __device__ void finish(State&) const;       called once by every thread of every block (block reductions)
// idx is the element's linear index within the launch (the same for all operands), for ops that keep
// opmath side buffers indexed by element.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/detail/OffsetCalculator.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace safe_ops {
namespace cuda_detail {

constexpr int kThreads = 256;
constexpr int kVecBytes = 16;   // one 128-bit load/store per operand per step on the contiguous path
constexpr int kStridedIlp = 4;  // elements per thread per step on the strided path: all loads issued first
constexpr int kGroup = 8;       // operands of variable-count ops (the K tensors) per launch

constexpr int at_least_one(int n) { return n > 0 ? n : 1; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, int N>
struct alignas(kVecBytes) Vec {
  T v[N];
};

template <int N>
struct Ptrs {
  char* p[N];
};

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

// Base for ops without per-thread state.
struct Stateless {
  struct State {};
  __device__ State init() const { return {}; }
  __device__ void finish(State&) const {}
};

// Base for ops whose operand counts are fixed.
template <int Out, int In>
struct FixedArity {
  static constexpr int kOut = Out;
  static constexpr int kIn = In;
  C10_HOST_DEVICE int num_out() const { return Out; }
  C10_HOST_DEVICE int num_in() const { return In; }
};

template <typename scalar_t>
__device__ __forceinline__ at::opmath_type<scalar_t> load_one(const char* p) {
  return static_cast<at::opmath_type<scalar_t>>(*reinterpret_cast<const scalar_t*>(p));
}

// Every operand contiguous, same linear index: 64-bit indexing, 16-byte vectors when all pointers allow, then a
// scalar tail (or the whole range, unaligned).
template <typename scalar_t, typename Op>
__global__ void __launch_bounds__(kThreads)
    contiguous_kernel(Ptrs<Op::kOut + Op::kIn> ptrs, int64_t n, bool vectorised, Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kOut = Op::kOut, kIn = Op::kIn;
  constexpr int kVec = kVecBytes / sizeof(scalar_t);
  using V = Vec<scalar_t, kVec>;
  auto state = op.init();
  const int64_t step = int64_t(gridDim.x) * kThreads;
  const int64_t tid = int64_t(blockIdx.x) * kThreads + threadIdx.x;

  const int64_t nvec = vectorised ? n / kVec : 0;
  for (int64_t v = tid; v < nvec; v += step) {
    V x[at_least_one(kIn)];
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      if (i < op.num_in()) x[i] = reinterpret_cast<const V*>(ptrs.p[kOut + i])[v];
    }
    V y[at_least_one(kOut)];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      opmath_t in[at_least_one(kIn)] = {};
      opmath_t out[at_least_one(kOut)] = {};
#pragma unroll
      for (int i = 0; i < kIn; ++i) {
        if (i < op.num_in()) in[i] = static_cast<opmath_t>(x[i].v[j]);
      }
      op(state, v * kVec + j, in, out);
#pragma unroll
      for (int o = 0; o < kOut; ++o) y[o].v[j] = static_cast<scalar_t>(out[o]);
    }
#pragma unroll
    for (int o = 0; o < kOut; ++o) {
      if (o < op.num_out()) reinterpret_cast<V*>(ptrs.p[o])[v] = y[o];
    }
  }

  for (int64_t idx = nvec * kVec + tid; idx < n; idx += step) {
    opmath_t in[at_least_one(kIn)] = {};
    opmath_t out[at_least_one(kOut)] = {};
#pragma unroll
    for (int i = 0; i < kIn; ++i) {
      if (i < op.num_in()) in[i] = load_one<scalar_t>(ptrs.p[kOut + i] + idx * int64_t(sizeof(scalar_t)));
    }
    op(state, idx, in, out);
#pragma unroll
    for (int o = 0; o < kOut; ++o) {
      if (o < op.num_out()) reinterpret_cast<scalar_t*>(ptrs.p[o])[idx] = static_cast<scalar_t>(out[o]);
    }
  }
  op.finish(state);
}

// General strides / broadcast (zero strides): byte offsets from torch's OffsetCalculator, so n < 2^31 and
// offsets fit 32 bits (the host splits bigger iterators with with_32bit_indexing()).
template <typename scalar_t, typename Op>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(Ptrs<Op::kOut + Op::kIn> ptrs, OffsetCalculator<Op::kOut + Op::kIn> calc, int64_t n, Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using offset_t = typename OffsetCalculator<Op::kOut + Op::kIn>::offset_type;
  constexpr int kOut = Op::kOut, kIn = Op::kIn;
  auto state = op.init();
  constexpr int64_t chunk = int64_t(kThreads) * kStridedIlp;
  for (int64_t base = int64_t(blockIdx.x) * chunk; base < n; base += int64_t(gridDim.x) * chunk) {
    offset_t off[kStridedIlp] = {};
    opmath_t in[kStridedIlp][at_least_one(kIn)] = {};
#pragma unroll
    for (int u = 0; u < kStridedIlp; ++u) {
      const int64_t idx = base + threadIdx.x + u * kThreads;
      if (idx < n) {
        off[u] = calc.get(static_cast<uint32_t>(idx));
#pragma unroll
        for (int i = 0; i < kIn; ++i) {
          if (i < op.num_in()) in[u][i] = load_one<scalar_t>(ptrs.p[kOut + i] + off[u][kOut + i]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kStridedIlp; ++u) {
      const int64_t idx = base + threadIdx.x + u * kThreads;
      if (idx < n) {
        opmath_t out[at_least_one(kOut)] = {};
        op(state, idx, in[u], out);
#pragma unroll
        for (int o = 0; o < kOut; ++o) {
          if (o < op.num_out()) {
            *reinterpret_cast<scalar_t*>(ptrs.p[o] + off[u][o]) = static_cast<scalar_t>(out[o]);
          }
        }
      }
    }
  }
  op.finish(state);
}

// Grid-stride loops: no more blocks than can be resident at once (also bounds the atomics of reductions).
inline int blocks_for(int64_t work_items) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = int64_t(prop->multiProcessorCount) * (prop->maxThreadsPerMultiProcessor / kThreads);
  return static_cast<int>(std::max<int64_t>(1, std::min(ceil_div(work_items, kThreads), resident)));
}

// One launch of `op` over `iter` (contiguous, or small enough for 32-bit offsets: see for_each_piece).
template <typename scalar_t, typename Op>
void launch(const at::TensorIteratorBase& iter, const Slots<Op::kOut + Op::kIn>& slots, const Op& op) {
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
    ptrs.p[s] = static_cast<char*>(iter.data_ptr(slots.operand[s]));
    aligned = aligned && reinterpret_cast<uintptr_t>(ptrs.p[s]) % kVecBytes == 0;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  if (iter.is_contiguous()) {
    constexpr int kVec = kVecBytes / sizeof(scalar_t);
    const int blocks = blocks_for(aligned ? ceil_div(n, kVec) : n);
    contiguous_kernel<scalar_t, Op><<<blocks, kThreads, 0, stream>>>(ptrs, n, aligned, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  TORCH_INTERNAL_ASSERT(iter.can_use_32bit_indexing());
  const std::vector<int64_t> zero_strides(std::max<int64_t>(iter.ndim(), 1), 0);  // unused slots
  std::array<const int64_t*, N> strides;
  for (int s = 0; s < N; ++s) {
    strides[s] = slots.operand[s] >= 0 ? iter.strides(slots.operand[s]).data() : zero_strides.data();
  }
  const OffsetCalculator<N> calc(iter.ndim(), iter.shape().data(), strides.data());  // byte strides
  strided_kernel<scalar_t, Op><<<blocks_for(ceil_div(n, kStridedIlp)), kThreads, 0, stream>>>(ptrs, calc, n, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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

// Checks the iterator is what the op code promises (one floating dtype, CUDA), sets the device and calls
// body(TypeTag<scalar_t>{}).
template <typename F>
void dispatch_floating(at::TensorIteratorBase& iter, const F& body) {
  const at::ScalarType dtype = iter.dtype(0);
  for (int i = 0; i < iter.ntensors(); ++i) {
    TORCH_INTERNAL_ASSERT(iter.dtype(i) == dtype, "safe_ops: mixed operand dtypes reached a CUDA kernel");
    TORCH_INTERNAL_ASSERT(iter.device(i).is_cuda(), "safe_ops: non-CUDA operand reached a CUDA kernel");
  }
  const c10::cuda::CUDAGuard guard(iter.device(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "safe_ops_cuda", [&] { body(TypeTag<scalar_t>{}); });
}

}  // namespace cuda_detail
}  // namespace safe_ops
