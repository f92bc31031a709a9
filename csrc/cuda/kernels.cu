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
                          "safe_ops: weights tensor must be a contiguous float64 [", k, "] tensor on ",
                          iter.device(0));
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

// out = a + (value·b)·c   (torch's addcmul expression).
template <typename opmath_t>
struct Addcmul : FixedArity<1, 3>, Stateless {
  opmath_t value;
  explicit Addcmul(double v) : value(static_cast<opmath_t>(v)) {}
  __device__ void operator()(State&, int64_t, const opmath_t* in, opmath_t* out) const {
    out[0] = in[0] + value * in[1] * in[2];
  }
};

// [out, g, t]: out = (value·g)·t;  or both: [gb, gc, g, b, c]: gb = (value·g)·c, gc = (value·g)·b.
template <typename opmath_t>
struct AddcmulBackward : Stateless {
  static constexpr int kOut = 2, kIn = 3;
  opmath_t value;
  bool both;
  AddcmulBackward(double v, bool both_grads) : value(static_cast<opmath_t>(v)), both(both_grads) {}
  C10_HOST_DEVICE int num_out() const { return both ? 2 : 1; }
  C10_HOST_DEVICE int num_in() const { return both ? 3 : 2; }
  __device__ void operator()(State&, int64_t, const opmath_t* in, opmath_t* out) const {
    const opmath_t vg = value * in[0];
    out[0] = vg * (both ? in[2] : in[1]);
    out[1] = vg * in[1];
  }
};

// [out, a, b] with a scalar weight or [out, a, b, w]; torch's two-sided formula (exact at w = 0 and w = 1).
template <typename opmath_t>
struct Lerp : Stateless {
  static constexpr int kOut = 1, kIn = 3;
  opmath_t weight;
  bool weight_tensor;
  Lerp(double w, bool has_weight_tensor) : weight(static_cast<opmath_t>(w)), weight_tensor(has_weight_tensor) {}
  C10_HOST_DEVICE int num_out() const { return 1; }
  C10_HOST_DEVICE int num_in() const { return weight_tensor ? 3 : 2; }
  __device__ void operator()(State&, int64_t, const opmath_t* in, opmath_t* out) const {
    const opmath_t a = in[0], b = in[1];
    const opmath_t w = weight_tensor ? in[2] : weight;
    out[0] = std::abs(w) < opmath_t(0.5) ? a + w * (b - a) : b - (b - a) * (opmath_t(1) - w);
  }
};

// Outputs [ga? gb? gw?] for mask bits 1, 2, 4; inputs g, w (bits 1|2), a, b (bit 4). Every candidate is computed
// and the slots picked with selects, so operand positions stay compile-time (registers, no local memory).
template <typename opmath_t>
struct LerpBackward : Stateless {
  static constexpr int kOut = 3, kIn = 4;
  int mask;
  explicit LerpBackward(int m) : mask(m) {}
  C10_HOST_DEVICE bool needs_w() const { return (mask & 3) != 0; }
  C10_HOST_DEVICE int num_out() const { return (mask & 1) + ((mask >> 1) & 1) + ((mask >> 2) & 1); }
  C10_HOST_DEVICE int num_in() const { return 1 + (needs_w() ? 1 : 0) + ((mask & 4) ? 2 : 0); }
  __device__ void operator()(State&, int64_t, const opmath_t* in, opmath_t* out) const {
    const opmath_t g = in[0], w = in[1];
    const opmath_t a = needs_w() ? in[2] : in[1];
    const opmath_t b = needs_w() ? in[3] : in[2];
    const opmath_t ga = g * (opmath_t(1) - w), gb = g * w, gw = g * (b - a);
    out[0] = (mask & 1) ? ga : (mask & 2) ? gb : gw;
    out[1] = (mask & 1) && (mask & 2) ? gb : gw;
    out[2] = gw;
  }
};

// Runs a fixed-arity op over the whole iterator: outputs then inputs, in iterator order.
template <template <typename> class Op, typename... Args>
void run_pointwise(at::TensorIteratorBase& iter, Args... args) {
  if (iter.numel() == 0) return;
  dispatch_floating(iter, [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using op_t = Op<at::opmath_type<scalar_t>>;
    const op_t op(args...);
    TORCH_INTERNAL_ASSERT(iter.noutputs() == op.num_out() && iter.ninputs() == op.num_in(),
                          "safe_ops: unexpected operand count");
    const auto slots = slots_for(op, 0, op.num_out());
    for_each_piece(iter, [&](at::TensorIteratorBase& piece) { launch<scalar_t>(piece, slots, op); });
  });
}

// ---- DeviceKernels entries ---------------------------------------------------------------------------------

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

void addcmul(at::TensorIteratorBase& iter, double value) { run_pointwise<Addcmul>(iter, value); }

void addcmul_backward(at::TensorIteratorBase& iter, double value) {
  run_pointwise<AddcmulBackward>(iter, value, iter.noutputs() == 2);
}

void lerp(at::TensorIteratorBase& iter, double weight) { run_pointwise<Lerp>(iter, weight, iter.ninputs() == 3); }

void lerp_backward(at::TensorIteratorBase& iter, int mask) {
  TORCH_INTERNAL_ASSERT(mask > 0 && mask < 8, "safe_ops: lerp_backward mask ", mask);
  run_pointwise<LerpBackward>(iter, mask);
}

}  // namespace

constexpr DeviceKernels kCudaKernels = {
    linear_combination, scale_many, dot_many, addcmul, addcmul_backward, lerp, lerp_backward,
};

static RegisterKernels registrar(c10::DeviceType::CUDA, kCudaKernels);

}  // namespace safe_ops
