// What a CUDA kernel body sees, written so the same body runs on the device (the __global__ wrappers in
// elementwise_kernels.cu / foreach_kernels.cu) and on the host over a simulated grid (csrc/cuda_on_host/): its grid
// position and a memory accessor. No CUDA header here: g++ compiles it too.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

// #pragma unroll where nvcc compiles; nothing for g++ (which would warn about an unknown pragma).
#if defined(__CUDACC__)
#define SAFE_OPS_UNROLL _Pragma("unroll")
#else
#define SAFE_OPS_UNROLL
#endif

namespace safe_ops {
namespace cuda_detail {

constexpr int kVecBytes = 16;  // one 128-bit load/store per operand per step on the contiguous paths

// blockIdx.x, gridDim.x, threadIdx.x (1-D grids only).
struct GridPos {
  int64_t block;
  int64_t blocks;
  int thread;
};

// N elements loaded or stored as one access (N·sizeof(T) is 16 bytes, or 8 for the narrower operand of a mixed
// foreach): aligned to its size, as the vector instruction needs.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Plain loads and stores: the device's accessor. The host simulation's CheckedMem has the same interface and
// checks bounds and alignment of every access.
struct DirectMem {
  template <typename V>
  C10_HOST_DEVICE V load(const void* p) const {
    return *reinterpret_cast<const V*>(p);
  }
  template <typename V>
  C10_HOST_DEVICE void store(void* p, const V& v) const {
    *reinterpret_cast<V*>(p) = v;
  }
};

}  // namespace cuda_detail
}  // namespace safe_ops
