// The multi-tensor-apply foreach kernel (as ATen's MultiTensorApply.cuh and apex) as host-and-device code: the
// metadata a launch carries, the per-thread chunk walker, and the host's packing of members into launches, so
// the same code runs on the device (foreach_kernels.cu) and in the host simulation (csrc/cuda_on_host/). The host packs
// the members' pointers, sizes and numbers into a Meta passed by value as the kernel's parameter (no copy to the
// device, no sync), up to Meta::kTensors members and kMaxBlocks chunks per launch; block b runs chunk b of its
// member. 16-byte vector loads/stores where the chunk's pointers allow, a bounds-checked tail, 64-bit offsets.
// The math is the formula of csrc/core/formulas.h in torch's CUDA form, built per member from its number (read on the
// device when the numbers are a tensor), in opmath, rounded once to the member's dtype.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/formulas.h"
#include "cuda/grid.h"

namespace safe_ops {
namespace foreach_detail {

using cuda_detail::GridPos;
using cuda_detail::kVecBytes;
using cuda_detail::Vec;

constexpr int kThreads = 512;
constexpr int64_t kChunk = 65536;  // elements per block
constexpr int kMaxBlocks = 320;

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

// The arithmetic type: at::opmath_type of the member, or double when an operand is double.
template <typename scalar_t, typename operand_t>
using mixed_opmath_t = std::conditional_t<std::is_same_v<operand_t, double>, double, at::opmath_type<scalar_t>>;

// Thread pos.thread of block pos.block: its share of the block's chunk.
template <typename scalar_t, typename operand_t, template <typename...> class Formula, int N, typename Mem>
C10_HOST_DEVICE void foreach_body(const GridPos& pos, const Mem& mem, const Meta<N>& meta, const double* values) {
  using op_t = mixed_opmath_t<scalar_t, operand_t>;
  constexpr int K = N - 1;
  // One vector step covers kVec elements of every operand: 16 bytes of the widest type.
  constexpr int kVec = kVecBytes / (sizeof(scalar_t) > sizeof(operand_t) ? sizeof(scalar_t) : sizeof(operand_t));
  using VS = Vec<scalar_t, kVec>;
  using VO = Vec<operand_t, kVec>;
  const int t = meta.block_tensor[pos.block];
  const int64_t begin = int64_t(meta.block_chunk[pos.block]) * kChunk;
  const int64_t left = meta.numel[t] - begin;
  const int64_t n = left < kChunk ? left : kChunk;  // (std::min would odr-use kChunk in device code)
  const double number = values != nullptr ? mem.template load<double>(values + meta.index[t]) : meta.scalar[t];
  const Formula<op_t> f(formulas::Scalars{number, 0.0});
  scalar_t* self = static_cast<scalar_t*>(meta.ptr[0][t]) + begin;
  const operand_t* ops[K];
  bool aligned = reinterpret_cast<uintptr_t>(self) % sizeof(VS) == 0;
  SAFE_OPS_UNROLL
  for (int k = 0; k < K; ++k) {
    ops[k] = static_cast<const operand_t*>(meta.ptr[k + 1][t]) + begin;
    aligned = aligned && reinterpret_cast<uintptr_t>(ops[k]) % sizeof(VO) == 0;
  }
  const int64_t nvec = aligned ? n / kVec : 0;
  for (int64_t v = pos.thread; v < nvec; v += kThreads) {
    VS a = mem.template load<VS>(self + v * kVec);
    VO b[K];
    SAFE_OPS_UNROLL
    for (int k = 0; k < K; ++k) b[k] = mem.template load<VO>(ops[k] + v * kVec);
    SAFE_OPS_UNROLL
    for (int j = 0; j < kVec; ++j) {
      op_t in[N];
      in[0] = static_cast<op_t>(a.v[j]);
      SAFE_OPS_UNROLL
      for (int k = 0; k < K; ++k) in[k + 1] = static_cast<op_t>(b[k].v[j]);
      op_t out[1];
      formulas::apply_cuda(f, in, out);
      a.v[j] = static_cast<scalar_t>(out[0]);
    }
    mem.store(self + v * kVec, a);
  }
  for (int64_t j = nvec * kVec + pos.thread; j < n; j += kThreads) {  // the tail, or all of an unaligned chunk
    op_t in[N];
    in[0] = static_cast<op_t>(mem.template load<scalar_t>(self + j));
    SAFE_OPS_UNROLL
    for (int k = 0; k < K; ++k) in[k + 1] = static_cast<op_t>(mem.template load<operand_t>(ops[k] + j));
    op_t out[1];
    formulas::apply_cuda(f, in, out);
    mem.store(self + j, static_cast<scalar_t>(out[0]));
  }
}

// One member as the packer sees it: its and its operands' pointers, size, number (or index into the values).
template <int N>
struct Member {
  void* ptr[N];
  int64_t numel;
  double scalar;
  int64_t index;
};

// Packs the members into launches: flush(meta, nblocks) for each. Empty members take no slot; a member whose
// chunks do not fit in a launch continues in the next one from slot 0.
template <int N, typename Flush>
void pack_launches(const std::vector<Member<N>>& members, const Flush& flush) {
  using M = Meta<N>;
  M meta;
  int slots = 0, nblocks = 0;  // of the pending launch
  for (const Member<N>& m : members) {
    if (m.numel == 0) continue;
    int slot = slots++;
    for (int k = 0; k < N; ++k) meta.ptr[k][slot] = m.ptr[k];
    meta.numel[slot] = m.numel;
    meta.scalar[slot] = m.scalar;
    meta.index[slot] = m.index;
    const int64_t nchunks = (m.numel + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < nchunks; ++c) {
      meta.block_tensor[nblocks] = static_cast<unsigned char>(slot);
      meta.block_chunk[nblocks] = static_cast<int>(c);
      ++nblocks;
      const bool last_chunk = c + 1 == nchunks;
      if (nblocks == kMaxBlocks || (last_chunk && slots == M::kTensors)) {
        flush(meta, nblocks);  // the parameters are copied at launch: meta can be refilled at once
        nblocks = 0;
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
  if (nblocks > 0) flush(meta, nblocks);
}

}  // namespace foreach_detail
}  // namespace safe_ops
