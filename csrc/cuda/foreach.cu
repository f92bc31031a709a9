// CUDA foreach kernels, multi-tensor-apply style (as ATen's MultiTensorApply.cuh and apex): the host packs the
// members' pointers, sizes and numbers into a metadata struct passed by value as the kernel's parameter (no copy
// to the device, no sync), up to Meta::kTensors members and kMaxBlocks chunks per launch; block b runs chunk b of
// its member. 16-byte vector loads/stores where the chunk's pointers allow, a bounds-checked tail, 64-bit
// offsets. The math is the formula of csrc/formulas.h, built per member from its number (read on the device
// when the numbers are a tensor), in opmath, rounded once to the member's dtype.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../kernels.h"

namespace safe_ops {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = 65536;  // elements per block
constexpr int kMaxBlocks = 320;
constexpr int kVecBytes = 16;

// Members per launch: the metadata stays under the 4 KiB kernel-parameter limit.
template <int N>
constexpr int max_tensors() {
  return N <= 2 ? 48 : (N == 3 ? 36 : 28);
}

template <int N>
struct Meta {
  static constexpr int kTensors = max_tensors<N>();
  void* ptr[N][kTensors];  // [member, operands...] of each slot
  int64_t numel[kTensors];
  double scalar[kTensors];  // host numbers (unused with device values)
  int64_t index[kTensors];  // position in the device values
  unsigned char block_tensor[kMaxBlocks];
  int block_chunk[kMaxBlocks];
};
static_assert(sizeof(Meta<2>) + sizeof(void*) <= 4096 && sizeof(Meta<3>) + sizeof(void*) <= 4096,
              "kernel parameters over 4 KiB");

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// The arithmetic type: at::opmath_type of the member, or double when an operand is double.
template <typename scalar_t, typename operand_t>
using mixed_opmath_t = std::conditional_t<std::is_same_v<operand_t, double>, double, at::opmath_type<scalar_t>>;

template <typename scalar_t, typename operand_t, template <typename...> class Formula, int N>
__global__ void __launch_bounds__(kThreads) foreach_kernel(Meta<N> meta, const double* values) {
  using op_t = mixed_opmath_t<scalar_t, operand_t>;
  constexpr int K = N - 1;
  // One vector step covers kVec elements of every operand: 16 bytes of the widest type.
  constexpr int kVec = kVecBytes / (sizeof(scalar_t) > sizeof(operand_t) ? sizeof(scalar_t) : sizeof(operand_t));
  using VS = Vec<scalar_t, kVec>;
  using VO = Vec<operand_t, kVec>;
  const int t = meta.block_tensor[blockIdx.x];
  const int64_t begin = int64_t(meta.block_chunk[blockIdx.x]) * kChunk;
  const int64_t left = meta.numel[t] - begin;
  const int64_t n = left < kChunk ? left : kChunk;  // (std::min would odr-use kChunk in device code)
  const Formula<op_t> f(formulas::Scalars{values != nullptr ? values[meta.index[t]] : meta.scalar[t], 0.0});
  scalar_t* self = static_cast<scalar_t*>(meta.ptr[0][t]) + begin;
  const operand_t* ops[K];
  bool aligned = reinterpret_cast<uintptr_t>(self) % sizeof(VS) == 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    ops[k] = static_cast<const operand_t*>(meta.ptr[k + 1][t]) + begin;
    aligned = aligned && reinterpret_cast<uintptr_t>(ops[k]) % sizeof(VO) == 0;
  }
  const int64_t nvec = aligned ? n / kVec : 0;
  for (int64_t v = threadIdx.x; v < nvec; v += kThreads) {
    VS a = reinterpret_cast<const VS*>(self)[v];
    VO b[K];
#pragma unroll
    for (int k = 0; k < K; ++k) b[k] = reinterpret_cast<const VO*>(ops[k])[v];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      op_t in[N];
      in[0] = static_cast<op_t>(a.v[j]);
#pragma unroll
      for (int k = 0; k < K; ++k) in[k + 1] = static_cast<op_t>(b[k].v[j]);
      op_t out[1];
      f(in, out);
      a.v[j] = static_cast<scalar_t>(out[0]);
    }
    reinterpret_cast<VS*>(self)[v] = a;
  }
  for (int64_t j = nvec * kVec + threadIdx.x; j < n; j += kThreads) {  // the tail, or all of an unaligned chunk
    op_t in[N];
    in[0] = static_cast<op_t>(self[j]);
#pragma unroll
    for (int k = 0; k < K; ++k) in[k + 1] = static_cast<op_t>(ops[k][j]);
    op_t out[1];
    f(in, out);
    self[j] = static_cast<scalar_t>(out[0]);
  }
}

template <typename scalar_t, typename operand_t, template <typename...> class Formula, int N>
void launch_all(const ForeachGroup& g) {
  constexpr int K = N - 1;
  using M = Meta<N>;
  TORCH_INTERNAL_ASSERT(g.noperands == K, "safe_ops: foreach operand count mismatch");
  const double* values = g.scalar_tensor.defined() ? g.scalar_tensor.const_data_ptr<double>() : nullptr;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  M meta;
  int slots = 0, nblocks = 0;  // of the pending launch
  auto flush = [&] {
    foreach_kernel<scalar_t, operand_t, Formula, N><<<nblocks, kThreads, 0, stream>>>(meta, values);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    nblocks = 0;
  };
  for (size_t i = 0; i < g.members.size(); ++i) {
    const int64_t numel = g.members[i].numel();
    if (numel == 0) continue;
    int slot = slots++;
    meta.ptr[0][slot] = g.members[i].data_ptr();
    for (int k = 0; k < K; ++k) meta.ptr[k + 1][slot] = const_cast<void*>(g.operands[i * K + k].const_data_ptr());
    meta.numel[slot] = numel;
    meta.scalar[slot] = values != nullptr ? 0.0 : g.scalars[i];
    meta.index[slot] = values != nullptr ? g.index[i] : 0;
    const int64_t nchunks = (numel + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < nchunks; ++c) {
      meta.block_tensor[nblocks] = static_cast<unsigned char>(slot);
      meta.block_chunk[nblocks] = static_cast<int>(c);
      ++nblocks;
      const bool last_chunk = c + 1 == nchunks;
      if (nblocks == kMaxBlocks || (last_chunk && slots == M::kTensors)) {
        flush();  // the parameters are copied at launch: meta can be refilled at once
        if (last_chunk) {
          slots = 0;
        } else {  // the member continues in the next launch, from slot 0
          for (int k = 0; k < N; ++k) meta.ptr[k][0] = meta.ptr[k][slot];
          meta.numel[0] = meta.numel[slot];
          meta.scalar[0] = meta.scalar[slot];
          meta.index[0] = meta.index[slot];
          slot = 0;
          slots = 1;
        }
      }
    }
  }
  if (nblocks > 0) flush();
}

template <template <typename...> class Formula>
void foreach_cuda(const ForeachGroup& g) {
  if (g.members.empty()) return;
  const c10::cuda::CUDAGuard guard(g.members[0].device());
  constexpr int N = Formula<float>::kIn;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.dtype, "safe_ops_foreach_cuda", [&] {
    using member_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.operand_dtype, "safe_ops_foreach_cuda_operand",
                                    [&] { launch_all<member_t, scalar_t, Formula, N>(g); });
  });
}

}  // namespace

#define SAFE_OPS_REGISTER_CUDA_FOREACH(base, formula, nlists) \
  SAFE_OPS_REGISTER_KERNEL(foreach_##base##_stub, CUDA, foreach_cuda<formulas::formula>);
SAFE_OPS_FOREACH_OPS(SAFE_OPS_REGISTER_CUDA_FOREACH)
#undef SAFE_OPS_REGISTER_CUDA_FOREACH

}  // namespace safe_ops
