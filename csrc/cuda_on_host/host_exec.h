// The host executor of the CUDA kernels (the Exec of csrc/cuda/launch.h): runs each kernel body at every
// position of the grid the CUDA launch would use, on the CPU, through CheckedMem. Reducing ops get the device's
// block reduction order (warp tree as __shfl_down_sync, then warps in order).
#pragma once

#include <ATen/ops/full.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda/elementwise_body.h"
#include "cuda/foreach_body.h"
#include "cuda_on_host/checked_mem.h"

namespace safe_ops {
namespace cuda_on_host {

using cuda_detail::GridPos;
using cuda_detail::kGroup;
using cuda_detail::kThreads;
using cuda_detail::kWarp;
using cuda_detail::Ptrs;

struct SimState {
  std::vector<Region> regions;  // the buffers of the current top-level kernel call
  Counts counts;
  int resident_blocks = 132 * (2048 / kThreads);  // an H100's 132 SMs, 8 blocks of 256 threads each
  std::vector<int64_t> only_blocks;               // if set: the blocks simulated (negative: from the end)
  int64_t foreach_from = 0;                       // foreach: only chunks reaching past this element
};

SimState& sim_state();

// The [first, last) bytes a tensor's elements span.
inline Region span_of(const at::TensorBase& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  int64_t hi = 0, lo = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t extent = (t.size(d) - 1) * t.stride(d);
    (extent > 0 ? hi : lo) += extent;
  }
  return Region{base + lo * t.element_size(), base + (hi + 1) * t.element_size(), nullptr};
}

struct HostExec {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  SimState* st;

  struct NoGuard {};
  int resident_blocks() const { return st->resident_blocks; }
  void note(const at::TensorBase& t) const {
    if (t.defined() && t.numel() > 0) st->regions.push_back(span_of(t));
  }
  NoGuard guard(c10::Device) const { return {}; }
  at::Tensor scratch(int64_t n, at::ScalarType dtype) const {  // NaN: a read before a write shows
    at::Tensor t = at::full({n}, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(dtype));
    note(t);
    return t;
  }
  CheckedMem mem() const { return CheckedMem(&st->regions, &st->counts); }

  bool selected(int64_t block, int64_t blocks) const {
    if (st->only_blocks.empty()) return true;
    return std::any_of(st->only_blocks.begin(), st->only_blocks.end(),
                       [&](int64_t b) { return b == block || b + blocks == block; });
  }

  template <typename Op, typename Body>
  void run_grid(int blocks, const Op& op, const Body& body) const {
    ++st->counts.launches;
    const CheckedMem m = mem();
    for (int64_t b = 0; b < blocks; ++b) {
      if (!selected(b, blocks)) continue;
      ++st->counts.blocks;
      std::vector<typename Op::State> states;
      for (int t = 0; t < kThreads; ++t) {
        auto s = body(GridPos{b, blocks, t}, m);
        if constexpr (Op::kBlockReduce) states.push_back(s);
      }
      if constexpr (Op::kBlockReduce) block_reduce(op, states, b, m);
    }
  }

  template <typename Op>
  static void block_reduce(const Op& op, const std::vector<typename Op::State>& states, int64_t block,
                           const CheckedMem& m) {
    for (int i = 0; i < op.n; ++i) {
      double sum = 0;
      for (int w = 0; w < kThreads / kWarp; ++w) {
        double v[kWarp], next[kWarp];
        for (int l = 0; l < kWarp; ++l) v[l] = states[w * kWarp + l].acc[i];
        for (int offset = kWarp / 2; offset > 0; offset /= 2) {
          // __shfl_down_sync: a lane whose source is past the warp gets its own value
          for (int l = 0; l < kWarp; ++l) next[l] = v[l] + (l + offset < kWarp ? v[l + offset] : v[l]);
          std::copy(next, next + kWarp, v);
        }
        sum += v[0];
      }
      m.store(op.partial + block * kGroup + i, sum);
    }
  }

  template <typename scalar_t, typename Op, int N>
  void contiguous(int blocks, const Ptrs<N>& ptrs, int64_t n, bool vectorised, const Op& op) const {
    run_grid(blocks, op, [&](const GridPos& p, const CheckedMem& m) {
      return cuda_detail::contiguous_body<scalar_t>(p, m, ptrs, n, vectorised, op);
    });
  }
  template <typename scalar_t, typename Op, int N, typename Calc>
  void strided(int blocks, const Ptrs<N>& ptrs, const Calc& calc, int64_t n, const Op& op) const {
    run_grid(blocks, op, [&](const GridPos& p, const CheckedMem& m) {
      return cuda_detail::strided_body<scalar_t>(p, m, ptrs, calc, n, op);
    });
  }
  void sum_partials(const double* partial, int64_t blocks, double* result, int n) const {
    ++st->counts.launches;
    for (int t = 0; t < kWarp; ++t) cuda_detail::sum_partials_body(GridPos{0, 1, t}, mem(), partial, blocks, result, n);
  }

  // The foreach kernel over the launches pack_launches() makes.
  template <typename scalar_t, typename operand_t, template <typename...> class Formula, int N>
  void foreach (const std::vector<foreach_detail::Member<N>>& members, const double* values) const {
    using namespace foreach_detail;
    pack_launches<N>(members, [&](const Meta<N>& meta, int nblocks) {
      ++st->counts.launches;
      for (int b = 0; b < nblocks; ++b) {
        if ((int64_t(meta.block_chunk[b]) + 1) * kChunk <= st->foreach_from) continue;
        ++st->counts.blocks;
        for (int t = 0; t < foreach_detail::kThreads; ++t) {
          foreach_body<scalar_t, operand_t, Formula>(GridPos{b, nblocks, t}, mem(), meta, values);
        }
      }
    });
  }
};

}  // namespace cuda_on_host
}  // namespace safe_ops
