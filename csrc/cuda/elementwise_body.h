// The per-thread bodies of the elementwise CUDA kernels and the ops they run, as host-and-device functions of the
// grid position (grid.h): the __global__ wrappers (elementwise_kernels.cu) call them with blockIdx/threadIdx, the host
// simulation (csrc/cuda_on_host/) with every position of a simulated grid. No CUDA header here.
//
// An op is a small functor with a fixed maximum arity (kOut outputs, kIn inputs per launch). The body loads the
// active inputs of one element in opmath, calls the op, and rounds and stores its outputs once. Ops with a
// variable operand count (K tensors) are run in groups of at most kGroup operands per launch.
//   static constexpr int kOut, kIn;             slots per launch (slot s < kOut: output, else input)
//   int num_out() const; int num_in() const;     active slots this launch: outputs [0, num_out()), inputs
//                                                [kOut, kOut + num_in()); the rest are never touched
//   State init(mem) const;                       per-thread state (weights read once, dot accumulators)
//   void operator()(State&, int64_t idx, const opmath_t* in, opmath_t* out, mem) const;
//   static constexpr bool kBlockReduce;          whether the kernel ends with a block reduction of the states
// idx is the element's linear index within the launch (the same for all operands), for ops that keep
// opmath side buffers indexed by element.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <array>
#include <cstdint>

#include "core/formulas.h"
#include "cuda/grid.h"

namespace safe_ops {
namespace cuda_detail {

constexpr int kThreads = 256;
constexpr int kStridedIlp = 4;  // elements per thread per step on the strided path: all loads issued first
constexpr int kGroup = 8;       // operands of variable-count ops (the K tensors) per launch
constexpr int kWarp = 32;

constexpr int at_least_one(int n) { return n > 0 ? n : 1; }

template <int N>
struct Ptrs {
  char* p[N];
};

// Base for ops without per-thread state or reduction.
struct Stateless {
  struct State {};
  static constexpr bool kBlockReduce = false;
  template <typename Mem>
  C10_HOST_DEVICE State init(const Mem&) const {
    return {};
  }
};

// Weights [first, first + n) of one group: host values converted on the host, or a device pointer read by each
// thread once at start (a weights tensor never syncs to the host).
template <typename opmath_t>
struct GroupWeights {
  opmath_t host[kGroup];
  const double* device;
  int n;

  struct Loaded {
    opmath_t w[kGroup];
  };

  template <typename Mem>
  C10_HOST_DEVICE Loaded load(const Mem& mem) const {
    Loaded l;
    SAFE_OPS_UNROLL
    for (int i = 0; i < kGroup; ++i) {
      l.w[i] = device == nullptr ? host[i]
                                 : (i < n ? static_cast<opmath_t>(mem.template load<double>(device + i)) : opmath_t(0));
    }
    return l;
  }
};

// A product the compiler may not fuse into a later addition (nvcc contracts a*b + c into fma by default). The
// host build (x86-64 baseline, no FMA instruction) has nothing to contract to.
C10_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
C10_HOST_DEVICE inline double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// out = Σ w_i·x_i (+ alpha·value), summed in input order from w_0·x_0. With K > kGroup the running sum passes
// between launches through an opmath buffer (indexed by element), so the result is rounded once and is the same
// as a single pass.
template <typename opmath_t>
struct LinearCombination {
  static constexpr int kOut = 1, kIn = kGroup;
  static constexpr bool kBlockReduce = false;
  GroupWeights<opmath_t> weights;
  const opmath_t* acc_in;  // sum of earlier groups, or null for the first group
  opmath_t* acc_out;       // where a non-final group leaves its sum (then `out` is not written), or null
  bool has_scalar;
  opmath_t alpha, value;

  using State = typename GroupWeights<opmath_t>::Loaded;
  C10_HOST_DEVICE int num_out() const { return acc_out == nullptr ? 1 : 0; }
  C10_HOST_DEVICE int num_in() const { return weights.n; }
  template <typename Mem>
  C10_HOST_DEVICE State init(const Mem& mem) const {
    return weights.load(mem);
  }

  template <typename Mem>
  C10_HOST_DEVICE void operator()(const State& s, int64_t idx, const opmath_t* in, opmath_t* out,
                                  const Mem& mem) const {
    // The first product is rounded on its own, so each later term fuses as fma(w_i, x_i, acc), exactly torch's
    // a + alpha·b: alpha = 1 adds and torch.add(x, y, alpha=a) match bit for bit.
    opmath_t acc =
        acc_in == nullptr ? mul_rn(s.w[0], in[0]) : mem.template load<opmath_t>(acc_in + idx) + s.w[0] * in[0];
    SAFE_OPS_UNROLL
    for (int i = 1; i < kIn; ++i) {
      if (i < weights.n) acc += s.w[i] * in[i];
    }
    if (acc_out != nullptr) {
      mem.store(acc_out + idx, acc);
      return;
    }
    // Only when asked: adding +0 would turn a -0.0 sum into +0.0. Written as torch's add (a + alpha·b).
    if (has_scalar) acc += alpha * value;
    out[0] = acc;
  }
};

// out_i = s_i·g, as torch's CUDA grad * number: the number rounded to the tensors' dtype first
// (formulas::cuda_number), also when it comes from a weights tensor (read through the kernel's dtype).
template <typename scalar_t>
struct ScaleMany {
  using opmath_t = at::opmath_type<scalar_t>;
  static constexpr int kOut = kGroup, kIn = 1;
  static constexpr bool kBlockReduce = false;
  GroupWeights<opmath_t> scales;

  using State = typename GroupWeights<opmath_t>::Loaded;
  C10_HOST_DEVICE int num_out() const { return scales.n; }
  C10_HOST_DEVICE int num_in() const { return 1; }
  template <typename Mem>
  C10_HOST_DEVICE State init(const Mem& mem) const {
    State s = scales.load(mem);
    SAFE_OPS_UNROLL
    for (int i = 0; i < kGroup; ++i) s.w[i] = formulas::cuda_number<scalar_t>(s.w[i]);
    return s;
  }

  template <typename Mem>
  C10_HOST_DEVICE void operator()(const State& s, int64_t, const opmath_t* in, opmath_t* out, const Mem&) const {
    SAFE_OPS_UNROLL
    for (int o = 0; o < kOut; ++o) out[o] = s.w[o] * in[0];
  }
};

// result[i] += Σ_j g[j]·x_i[j]: per-thread float64 sums (products of half/float values are exact in double),
// then a block reduction (warp tree, then the warps in order) into partial[block][i]; a second kernel
// (sum_partials_body) adds the blocks' partials in block order. No atomics: the same device gives the same bits.
template <typename opmath_t>
struct DotMany {
  static constexpr int kOut = 0, kIn = 1 + kGroup;
  static constexpr bool kBlockReduce = true;
  double* result;   // this group's first entry
  double* partial;  // [blocks][kGroup], one row per block of the launch (set by launch())
  int n;

  struct State {
    double acc[kGroup];
  };
  C10_HOST_DEVICE int num_out() const { return 0; }
  C10_HOST_DEVICE int num_in() const { return 1 + n; }
  template <typename Mem>
  C10_HOST_DEVICE State init(const Mem&) const {
    return State{};
  }

  template <typename Mem>
  C10_HOST_DEVICE void operator()(State& s, int64_t, const opmath_t* in, opmath_t*, const Mem&) const {
    const double g = static_cast<double>(in[0]);
    SAFE_OPS_UNROLL
    for (int i = 0; i < kGroup; ++i) {
      if (i < n) s.acc[i] += g * static_cast<double>(in[1 + i]);
    }
  }
};

// Thread i < n of the one-block second kernel: result[i] += Σ_b partial[b][i], in block order.
template <typename Mem>
C10_HOST_DEVICE void sum_partials_body(const GridPos& pos, const Mem& mem, const double* partial, int64_t blocks,
                                       double* result, int n) {
  if (pos.block != 0 || pos.thread >= n) return;
  double sum = 0;
  for (int64_t b = 0; b < blocks; ++b) sum += mem.template load<double>(partial + b * kGroup + pos.thread);
  mem.store(result + pos.thread, mem.template load<double>(result + pos.thread) + sum);
}

// A formula of csrc/core/formulas.h as a launcher op: the launcher loads, the formula does the math, in torch's CUDA
// form (formulas::apply_cuda).
template <template <typename...> class Formula>
struct FormulaOp {
  template <typename scalar_t>
  struct Op : Stateless {
    using opmath_t = at::opmath_type<scalar_t>;
    using F = Formula<opmath_t, scalar_t>;
    static constexpr int kOut = F::kOut, kIn = F::kIn;
    F formula;
    explicit Op(const formulas::Scalars& s) : formula(s) {}
    C10_HOST_DEVICE int num_out() const { return kOut; }
    C10_HOST_DEVICE int num_in() const { return kIn; }
    template <typename Mem>
    C10_HOST_DEVICE void operator()(State&, int64_t, const opmath_t* in, opmath_t* out, const Mem&) const {
      formulas::apply_cuda(formula, in, out);
    }
  };
};

// Every operand contiguous, same linear index: 64-bit indexing, 16-byte vectors when all pointers allow, then a
// scalar tail (or the whole range, unaligned). Returns the thread's state (for a block reduction).
template <typename scalar_t, typename Op, typename Mem>
C10_HOST_DEVICE typename Op::State contiguous_body(const GridPos& pos, const Mem& mem,
                                                   const Ptrs<Op::kOut + Op::kIn>& ptrs, int64_t n, bool vectorised,
                                                   const Op& op) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kOut = Op::kOut, kIn = Op::kIn;
  constexpr int kVec = kVecBytes / sizeof(scalar_t);
  using V = Vec<scalar_t, kVec>;
  auto state = op.init(mem);
  const int64_t step = pos.blocks * kThreads;
  const int64_t tid = pos.block * kThreads + pos.thread;

  const int64_t nvec = vectorised ? n / kVec : 0;
  for (int64_t v = tid; v < nvec; v += step) {
    V x[at_least_one(kIn)];
    SAFE_OPS_UNROLL
    for (int i = 0; i < kIn; ++i) {
      if (i < op.num_in()) x[i] = mem.template load<V>(ptrs.p[kOut + i] + v * int64_t(sizeof(V)));
    }
    V y[at_least_one(kOut)];
    SAFE_OPS_UNROLL
    for (int j = 0; j < kVec; ++j) {
      opmath_t in[at_least_one(kIn)] = {};
      opmath_t out[at_least_one(kOut)] = {};
      SAFE_OPS_UNROLL
      for (int i = 0; i < kIn; ++i) {
        if (i < op.num_in()) in[i] = static_cast<opmath_t>(x[i].v[j]);
      }
      op(state, v * kVec + j, in, out, mem);
      SAFE_OPS_UNROLL
      for (int o = 0; o < kOut; ++o) y[o].v[j] = static_cast<scalar_t>(out[o]);
    }
    SAFE_OPS_UNROLL
    for (int o = 0; o < kOut; ++o) {
      if (o < op.num_out()) mem.store(ptrs.p[o] + v * int64_t(sizeof(V)), y[o]);
    }
  }

  for (int64_t idx = nvec * kVec + tid; idx < n; idx += step) {
    opmath_t in[at_least_one(kIn)] = {};
    opmath_t out[at_least_one(kOut)] = {};
    SAFE_OPS_UNROLL
    for (int i = 0; i < kIn; ++i) {
      if (i < op.num_in()) {
        in[i] = static_cast<opmath_t>(mem.template load<scalar_t>(ptrs.p[kOut + i] + idx * int64_t(sizeof(scalar_t))));
      }
    }
    op(state, idx, in, out, mem);
    SAFE_OPS_UNROLL
    for (int o = 0; o < kOut; ++o) {
      if (o < op.num_out()) mem.store(ptrs.p[o] + idx * int64_t(sizeof(scalar_t)), static_cast<scalar_t>(out[o]));
    }
  }
  return state;
}

// General strides / broadcast (zero strides): byte offsets from an offset calculator (torch's OffsetCalculator:
// n < 2^31 and offsets fit 32 bits; the host splits bigger iterators with with_32bit_indexing()).
template <typename scalar_t, typename Op, typename Calc, typename Mem>
C10_HOST_DEVICE typename Op::State strided_body(const GridPos& pos, const Mem& mem,
                                                const Ptrs<Op::kOut + Op::kIn>& ptrs, const Calc& calc, int64_t n,
                                                const Op& op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using offset_t = decltype(calc.get(0u));
  constexpr int kOut = Op::kOut, kIn = Op::kIn;
  auto state = op.init(mem);
  constexpr int64_t chunk = int64_t(kThreads) * kStridedIlp;
  for (int64_t base = pos.block * chunk; base < n; base += pos.blocks * chunk) {
    offset_t off[kStridedIlp] = {};
    opmath_t in[kStridedIlp][at_least_one(kIn)] = {};
    SAFE_OPS_UNROLL
    for (int u = 0; u < kStridedIlp; ++u) {
      const int64_t idx = base + pos.thread + u * kThreads;
      if (idx < n) {
        off[u] = calc.get(static_cast<uint32_t>(idx));
        SAFE_OPS_UNROLL
        for (int i = 0; i < kIn; ++i) {
          if (i < op.num_in())
            in[u][i] = static_cast<opmath_t>(mem.template load<scalar_t>(ptrs.p[kOut + i] + off[u][kOut + i]));
        }
      }
    }
    SAFE_OPS_UNROLL
    for (int u = 0; u < kStridedIlp; ++u) {
      const int64_t idx = base + pos.thread + u * kThreads;
      if (idx < n) {
        opmath_t out[at_least_one(kOut)] = {};
        op(state, idx, in[u], out, mem);
        SAFE_OPS_UNROLL
        for (int o = 0; o < kOut; ++o) {
          if (o < op.num_out()) mem.store(ptrs.p[o] + off[u][o], static_cast<scalar_t>(out[o]));
        }
      }
    }
  }
  return state;
}

}  // namespace cuda_detail
}  // namespace safe_ops
