// CUDA kernels: each op is a functor run by the shared launcher in elementwise.cuh (contiguous 16-byte
// vectorised path with 64-bit indexing, OffsetCalculator path for strides and broadcast). Arithmetic is in
// at::opmath_type (float for half/bfloat16) and each output is rounded once.
#include "../kernels.h"
#include "elementwise.cuh"

#include <ATen/ops/empty.h>

#include <cmath>

namespace safe_ops {
namespace {

using namespace cuda_detail;

// ---- weights of the K-operand ops ------------------------------------------------------------------------

void check_coeffs(const at::TensorIteratorBase& iter, const LinearCoeffs& c, int64_t k) {
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

// Weights [first, first + n) of one group: host values converted here, or a device pointer read by each thread
// once at start (a weights tensor never syncs to the host).
template <typename opmath_t>
struct GroupWeights {
  opmath_t host[kGroup];
  const double* device;
  int n;

  struct Loaded {
    opmath_t w[kGroup];
  };

  GroupWeights(const LinearCoeffs& c, int first, int count) : host(), device(nullptr), n(count) {
    if (c.weights_tensor.defined()) {
      device = c.weights_tensor.data_ptr<double>() + first;
    } else {
      for (int i = 0; i < count; ++i) host[i] = static_cast<opmath_t>(c.weights[first + i]);
    }
  }

  __device__ Loaded load() const {
    Loaded l;
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      l.w[i] = device == nullptr ? host[i] : (i < n ? static_cast<opmath_t>(device[i]) : opmath_t(0));
    }
    return l;
  }
};

// A product the compiler may not fuse into a later addition (nvcc contracts a*b + c into fma by default).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// ---- ops --------------------------------------------------------------------------------------------------

// out = Σ w_i·x_i (+ alpha·value), summed in input order from w_0·x_0. With K > kGroup the running sum passes
// between launches through an opmath buffer (indexed by element), so the result is rounded once and is the same
// as a single pass.
template <typename opmath_t>
struct LinearCombination {
  static constexpr int kOut = 1, kIn = kGroup;
  GroupWeights<opmath_t> weights;
  const opmath_t* acc_in;  // sum of earlier groups, or null for the first group
  opmath_t* acc_out;       // where a non-final group leaves its sum (then `out` is not written), or null
  bool has_scalar;
  opmath_t alpha, value;

  using State = typename GroupWeights<opmath_t>::Loaded;
  C10_HOST_DEVICE int num_out() const { return acc_out == nullptr ? 1 : 0; }
  C10_HOST_DEVICE int num_in() const { return weights.n; }
  __device__ State init() const { return weights.load(); }
  __device__ void finish(State&) const {}

  __device__ void operator()(const State& s, int64_t idx, const opmath_t* in, opmath_t* out) const {
    // The first product is rounded on its own, so each later term fuses as fma(w_i, x_i, acc), exactly torch's
    // a + alpha·b: alpha = 1 adds and torch.add(x, y, alpha=a) match bit for bit.
    opmath_t acc = acc_in == nullptr ? mul_rn(s.w[0], in[0]) : acc_in[idx] + s.w[0] * in[0];
#pragma unroll
    for (int i = 1; i < kIn; ++i) {
      if (i < weights.n) acc += s.w[i] * in[i];
    }
    if (acc_out != nullptr) {
      acc_out[idx] = acc;
      return;
    }
    // Only when asked: adding +0 would turn a -0.0 sum into +0.0. Written as torch's add (a + alpha·b).
    if (has_scalar) acc += alpha * value;
    out[0] = acc;
  }
};

// out_i = s_i·g.
template <typename opmath_t>
struct ScaleMany {
  static constexpr int kOut = kGroup, kIn = 1;
  GroupWeights<opmath_t> scales;

  using State = typename GroupWeights<opmath_t>::Loaded;
  C10_HOST_DEVICE int num_out() const { return scales.n; }
  C10_HOST_DEVICE int num_in() const { return 1; }
  __device__ State init() const { return scales.load(); }
  __device__ void finish(State&) const {}

  __device__ void operator()(const State& s, int64_t, const opmath_t* in, opmath_t* out) const {
#pragma unroll
    for (int o = 0; o < kOut; ++o) out[o] = s.w[o] * in[0];
  }
};

// result[i] += Σ_j g[j]·x_i[j]: per-thread float64 sums (products of half/float values are exact in double),
// then one block reduction and one atomicAdd per block and output.
template <typename opmath_t>
struct DotMany {
  static constexpr int kOut = 0, kIn = 1 + kGroup;
  static constexpr int kWarps = kThreads / 32;
  double* result;  // this group's first entry
  int n;

  struct State {
    double acc[kGroup];
  };
  C10_HOST_DEVICE int num_out() const { return 0; }
  C10_HOST_DEVICE int num_in() const { return 1 + n; }
  __device__ State init() const { return State{}; }

  __device__ void operator()(State& s, int64_t, const opmath_t* in, opmath_t*) const {
    const double g = static_cast<double>(in[0]);
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      if (i < n) s.acc[i] += g * static_cast<double>(in[1 + i]);
    }
  }

  __device__ void finish(State& s) const {
    __shared__ double partial[kWarps][kGroup];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      if (i < n) {
        double v = s.acc[i];
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) partial[warp][i] = v;
      }
    }
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < n) {
      double sum = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += partial[w][threadIdx.x];
      atomicAdd(result + threadIdx.x, sum);
    }
  }
};

// A formula of csrc/formulas.h as a launcher op: the launcher loads, the formula does the math.
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
    __device__ void operator()(State&, int64_t, const opmath_t* in, opmath_t* out) const { formula(in, out); }
  };
};

// Runs a fixed-arity op (a template over the storage type) over the whole iterator: outputs then inputs, in
// iterator order.
template <template <typename> class Op, typename... Args>
void run_pointwise(at::TensorIteratorBase& iter, Args... args) {
  if (iter.numel() == 0) return;
  dispatch_floating(iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using op_t = Op<scalar_t>;
    const op_t op(args...);
    TORCH_INTERNAL_ASSERT(iter.noutputs() == op.num_out() && iter.ninputs() == op.num_in(),
                          "safe_ops: unexpected operand count");
    const auto slots = slots_for(op, 0, op.num_out());
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) { launch<scalar_t>(piece, slots, op); });
  });
}

// ---- the K-operand kernels ---------------------------------------------------------------------------------

void linear_combination(at::TensorIteratorBase& iter, const LinearCoeffs& coeffs) {
  const int k = iter.ninputs();
  TORCH_INTERNAL_ASSERT(iter.noutputs() == 1 && k >= 1, "safe_ops: linear_combination expects [out, x_0..]");
  check_coeffs(iter, coeffs, k);
  if (iter.numel() == 0) return;
  dispatch_floating(iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using opmath_t = at::opmath_type<scalar_t>;
    const int groups = static_cast<int>(ceil_div(k, kGroup));
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      at::Tensor acc;  // running sum between groups
      if (groups > 1) {
        acc = at::empty({piece.numel()},
                        at::TensorOptions().dtype(c10::CppTypeToScalarType<opmath_t>::value).device(iter.device(0)));
      }
      opmath_t* acc_ptr = groups > 1 ? acc.data_ptr<opmath_t>() : nullptr;
      for (int g = 0; g < groups; ++g) {
        const int first = g * kGroup, n = std::min(kGroup, k - first);
        const bool last = g + 1 == groups;
        const LinearCombination<opmath_t> op{GroupWeights<opmath_t>(coeffs, first, n),
                                             g > 0 ? acc_ptr : nullptr,
                                             last ? nullptr : acc_ptr,
                                             last && coeffs.has_scalar,
                                             static_cast<opmath_t>(coeffs.scalar_alpha),
                                             static_cast<opmath_t>(coeffs.scalar_value)};
        launch<scalar_t>(piece, slots_for(op, 0, 1 + first), op);
      }
    });
  });
}

void scale_many(at::TensorIteratorBase& iter, const LinearCoeffs& scales) {
  const int k = iter.noutputs();
  TORCH_INTERNAL_ASSERT(k >= 1 && iter.ninputs() == 1, "safe_ops: scale_many expects [out_0.., g]");
  check_coeffs(iter, scales, k);
  if (iter.numel() == 0) return;
  dispatch_floating(iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using op_t = ScaleMany<at::opmath_type<scalar_t>>;
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      for (int first = 0; first < k; first += kGroup) {
        const int n = std::min(kGroup, k - first);
        const op_t op{GroupWeights<at::opmath_type<scalar_t>>(scales, first, n)};
        launch<scalar_t>(piece, slots_for(op, first, k), op);
      }
    });
  });
}

void dot_many(at::TensorIteratorBase& iter, const at::Tensor& result) {
  const int k = iter.ninputs() - 1;
  TORCH_INTERNAL_ASSERT(iter.noutputs() == 0 && k >= 1, "safe_ops: dot_many expects [g, x_0..] and no outputs");
  TORCH_INTERNAL_ASSERT(result.scalar_type() == at::kDouble && result.is_contiguous() && result.numel() == k &&
                            result.device() == iter.device(0),
                        "safe_ops: dot_many result must be a contiguous float64 [", k, "] tensor on ", iter.device(0));
  if (iter.numel() == 0) return;
  dispatch_floating(iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using op_t = DotMany<at::opmath_type<scalar_t>>;
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) {
      for (int first = 0; first < k; first += kGroup) {
        const int n = std::min(kGroup, k - first);
        const op_t op{result.data_ptr<double>() + first, n};
        launch<scalar_t>(piece, Slots<op_t::kIn>().range(0, 0, 1).range(1, 1 + first, n), op);
      }
    });
  });
}

template <template <typename...> class Formula>
void pointwise_kernel(at::TensorIteratorBase& iter, const formulas::Scalars& scalars) {
  run_pointwise<FormulaOp<Formula>::template Op>(iter, scalars);
}

}  // namespace

SAFE_OPS_REGISTER_KERNEL(linear_combination_stub, CUDA, linear_combination);
SAFE_OPS_REGISTER_KERNEL(scale_many_stub, CUDA, scale_many);
SAFE_OPS_REGISTER_KERNEL(dot_many_stub, CUDA, dot_many);
#define SAFE_OPS_REGISTER_CUDA_POINTWISE(name, formula) \
  SAFE_OPS_REGISTER_KERNEL(name##_stub, CUDA, pointwise_kernel<formulas::formula>);
SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_REGISTER_CUDA_POINTWISE)
#undef SAFE_OPS_REGISTER_CUDA_POINTWISE

}  // namespace safe_ops
