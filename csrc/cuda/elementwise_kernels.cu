// CUDA kernels: the __global__ wrappers of the kernel bodies (elementwise_body.h: contiguous 16-byte vectorised
// path with 64-bit indexing, OffsetCalculator path for strides and broadcast) and the CUDA executor that
// launches them for the host functions of kernel_hosts.h. Arithmetic is in at::opmath_type (float for
// half/bfloat16) and each output is rounded once.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/kernel_hosts.h"

namespace safe_ops {
namespace {

using namespace cuda_detail;

__device__ __forceinline__ GridPos grid_pos() { return GridPos{blockIdx.x, gridDim.x, static_cast<int>(threadIdx.x)}; }

// The block reduction of the reducing ops (DotMany): warp tree, then the warps in order, into partial[block].
template <typename Op>
__device__ void block_reduce(const Op& op, typename Op::State& s) {
  if constexpr (Op::kBlockReduce) {
    constexpr int kWarps = kThreads / kWarp;
    __shared__ double partial[kWarps][kGroup];
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      if (i < op.n) {
        double v = s.acc[i];
#pragma unroll
        for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) partial[warp][i] = v;
      }
    }
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < op.n) {
      double sum = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += partial[w][threadIdx.x];
      op.partial[int64_t(blockIdx.x) * kGroup + threadIdx.x] = sum;
    }
  }
}

template <typename scalar_t, typename Op>
__global__ void __launch_bounds__(kThreads)
    contiguous_kernel(Ptrs<Op::kOut + Op::kIn> ptrs, int64_t n, bool vectorised, Op op) {
  auto state = contiguous_body<scalar_t>(grid_pos(), DirectMem{}, ptrs, n, vectorised, op);
  block_reduce(op, state);
}

template <typename scalar_t, typename Op>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(Ptrs<Op::kOut + Op::kIn> ptrs, OffsetCalculator<Op::kOut + Op::kIn> calc, int64_t n, Op op) {
  auto state = strided_body<scalar_t>(grid_pos(), DirectMem{}, ptrs, calc, n, op);
  block_reduce(op, state);
}

__global__ void sum_partials_kernel(const double* partial, int64_t blocks, double* result, int n) {
  sum_partials_body(grid_pos(), DirectMem{}, partial, blocks, result, n);
}

struct CudaExec {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;

  int resident_blocks() const {
    const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
    return prop->multiProcessorCount * (prop->maxThreadsPerMultiProcessor / kThreads);
  }
  void note(const at::TensorBase&) const {}
  c10::cuda::CUDAGuard guard(c10::Device device) const { return c10::cuda::CUDAGuard(device); }
  at::Tensor scratch(int64_t n, at::ScalarType dtype) const {
    return at::empty({n}, at::TensorOptions().dtype(dtype).device(at::kCUDA, c10::cuda::current_device()));
  }

  template <typename scalar_t, typename Op, int N>
  void contiguous(int blocks, const Ptrs<N>& ptrs, int64_t n, bool vectorised, const Op& op) const {
    contiguous_kernel<scalar_t, Op><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(ptrs, n, vectorised, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename scalar_t, typename Op, int N>
  void strided(int blocks, const Ptrs<N>& ptrs, const OffsetCalculator<N>& calc, int64_t n, const Op& op) const {
    strided_kernel<scalar_t, Op><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(ptrs, calc, n, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  void sum_partials(const double* partial, int64_t blocks, double* result, int n) const {
    sum_partials_kernel<<<1, kWarp, 0, at::cuda::getCurrentCUDAStream()>>>(partial, blocks, result, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

void linear_combination_cuda(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  linear_combination(CudaExec{}, iter, c);
}
void scale_many_cuda(at::TensorIteratorBase& iter, const LinearCoeffs& c) { scale_many(CudaExec{}, iter, c); }
void dot_many_cuda(at::TensorIteratorBase& iter, const at::Tensor& result) { dot_many(CudaExec{}, iter, result); }
template <template <typename...> class Formula>
void pointwise_cuda(at::TensorIteratorBase& iter, const formulas::Scalars& scalars) {
  pointwise_kernel<Formula>(CudaExec{}, iter, scalars);
}

}  // namespace

SAFE_OPS_REGISTER_KERNEL(linear_combination_stub, CUDA, linear_combination_cuda);
SAFE_OPS_REGISTER_KERNEL(scale_many_stub, CUDA, scale_many_cuda);
SAFE_OPS_REGISTER_KERNEL(dot_many_stub, CUDA, dot_many_cuda);
#define SAFE_OPS_REGISTER_CUDA_POINTWISE(name, formula) \
  SAFE_OPS_REGISTER_KERNEL(name##_stub, CUDA, pointwise_cuda<formulas::formula>);
SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_REGISTER_CUDA_POINTWISE)
#undef SAFE_OPS_REGISTER_CUDA_POINTWISE

}  // namespace safe_ops
