// The element formulas of the pointwise ops and their backward passes, each written once and used by the CPU
// loop (csrc/cpu/elementwise_kernels.cpp), the CUDA functor (csrc/cuda/elementwise_kernels.cu) and, instantiated with
// at::Tensor, by the autograd Nodes' differentiable double-backward path (csrc/autograd/common.h). As ATen's lerp_value
// in Lerp.h.
//
// A formula is a class template over the value type T (at::opmath_type of the tensors' dtype in the kernels) and
// the storage type S (the dtype itself; S = T for whole tensors), which backward formulas use to round where
// torch's formula is several aten ops (`rounded`):
//   static constexpr int kOut, kIn;                 outputs and inputs, in the iterator's operand order
//   explicit F(const Scalars&);                      the op's numbers (value, weight), converted once
//   C10_HOST_DEVICE void operator()(const T* in, T* out) const;
// Each kernel registers one DispatchStub per formula: adding a formula to SAFE_OPS_POINTWISE_FORMULAS below
// gives it a CPU and a CUDA kernel, named <name>_stub (csrc/core/dispatch_stubs.h).
//
// operator() is torch's CPU formula. Where torch's CUDA kernel computes differently, the formula also has
//   C10_HOST_DEVICE void cuda(const T* in, T* out) const;   torch's CUDA order
// and the CUDA kernels (and their host simulation, csrc/cuda_on_host/) call it through apply_cuda().
#pragma once

#include <c10/macros/Macros.h>

#include <array>
#include <cmath>
#include <type_traits>

namespace safe_ops::formulas {

// The op's numbers: Scalars[0] is value / weight.
using Scalars = std::array<double, 2>;

// The type numbers take next to T: T itself for element types, double where T is a whole tensor.
template <typename T>
struct CoefType {
  using type = T;
};
template <typename T>
using coef_t = typename CoefType<T>::type;

// x rounded to the storage type S and back. Where torch's backward formula is several aten ops (grad * (tensor2 *
// value)), each op rounds its result to the tensors' dtype: float16/bfloat16 gradients round there too, to keep
// torch's bits. Nothing for float32/float64, and nothing for whole tensors (S = at::Tensor: each aten op rounds).
template <typename S, typename T>
C10_HOST_DEVICE T rounded(T x) {
  if constexpr (std::is_same_v<S, T> || !std::is_constructible_v<S, T>) {
    return x;
  } else {
    return static_cast<T>(static_cast<S>(x));
  }
}

// torch's CUDA kernels take a Python number next to a float16/bfloat16 tensor rounded to the tensor's dtype
// (TensorIterator casts the CPU scalar first: iter.scalar_value); its CPU kernels use the unrounded number.
template <typename S, typename T>
C10_HOST_DEVICE T cuda_number(T v) {
  return rounded<S>(v);
}

// fma(a, b, c), one rounding, on either side (torch's CUDA addcmul/addcdiv call std::fma explicitly).
C10_HOST_DEVICE inline float fused_multiply_add(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return ::fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
C10_HOST_DEVICE inline double fused_multiply_add(double a, double b, double c) {
#ifdef __CUDA_ARCH__
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

template <typename F, typename = void>
struct HasCudaForm : std::false_type {};
template <typename F>
struct HasCudaForm<F, std::void_t<decltype(&F::cuda)>> : std::true_type {};

// The formula as torch's CUDA kernel computes it: its cuda() form where it has one, else operator().
template <typename F, typename T>
C10_HOST_DEVICE void apply_cuda(const F& f, const T* in, T* out) {
  if constexpr (HasCudaForm<F>::value) {
    f.cuda(in, out);
  } else {
    f(in, out);
  }
}

// [out, a, b]: out = a + alpha·b, torch.add's a + alpha*b (alpha = 1: the exact sum; on CUDA nvcc contracts it
// to fma(alpha, b, a) as torch's kernel does, as the linear-combination path does). Used by foreach_add_.
template <typename T, typename S = T>
struct Add {
  static constexpr int kOut = 1, kIn = 2;
  coef_t<T> alpha;
  C10_HOST_DEVICE explicit Add(const Scalars& s) : alpha(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] + alpha * in[1]; }
};

// [out, a, b, c]: out = a + (value·b)·c   (torch.addcmul's order on the CPU). On CUDA torch computes
// value == 1 ? fma(b, c, a) : fma(value, b·c, a)   (pointwise_op_impl, DeviceAddCmulCdiv.cuh; foreach too).
template <typename T, typename S = T>
struct Addcmul {
  static constexpr int kOut = 1, kIn = 3;
  coef_t<T> value;
  C10_HOST_DEVICE explicit Addcmul(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] + value * in[1] * in[2]; }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const {
    out[0] = value == T(1) ? fused_multiply_add(in[1], in[2], in[0]) : fused_multiply_add(value, in[1] * in[2], in[0]);
  }
};

// [g_b, g, c]: one of addcmul's operand gradients, g·(c·value), torch's order (derivatives.yaml: grad *
// (tensor2 * value)), so float32/float64 gradients have torch's bits (the other operand's is symmetric).
template <typename T, typename S = T>
struct AddcmulGradOne {
  static constexpr int kOut = 1, kIn = 2;
  coef_t<T> value;
  explicit AddcmulGradOne(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] * rounded<S>(in[1] * value); }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const { out[0] = in[0] * rounded<S>(in[1] * cuda_number<S>(value)); }
};

// [g_b, g_c, g, b, c]: both, in one pass: g_b = g·(c·value), g_c = g·(b·value).
template <typename T, typename S = T>
struct AddcmulGrads {
  static constexpr int kOut = 2, kIn = 3;
  coef_t<T> value;
  explicit AddcmulGrads(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    out[0] = in[0] * rounded<S>(in[2] * value);
    out[1] = in[0] * rounded<S>(in[1] * value);
  }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const {
    const T v = cuda_number<S>(value);
    out[0] = in[0] * rounded<S>(in[2] * v);
    out[1] = in[0] * rounded<S>(in[1] * v);
  }
};

// [out, a, b, c]: out = a + (value·b)/c   (torch.addcdiv's order on the CPU). On CUDA torch computes
// value == 1 ? a + b/c : fma(value, b/c, a).
template <typename T, typename S = T>
struct Addcdiv {
  static constexpr int kOut = 1, kIn = 3;
  coef_t<T> value;
  C10_HOST_DEVICE explicit Addcdiv(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] + value * in[1] / in[2]; }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const {
    const T q = in[1] / in[2];
    out[0] = value == T(1) ? in[0] + q : fused_multiply_add(value, q, in[0]);
  }
};

// [g_b, g, c]: addcdiv's gradient of tensor1, g·(value/c), where torch's `value / tensor2` fills value into
// tensor2's dtype first.
template <typename T, typename S = T>
struct AddcdivGradTensor1 {
  static constexpr int kOut = 1, kIn = 2;
  coef_t<T> value;
  explicit AddcdivGradTensor1(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] * rounded<S>(rounded<S>(value) / in[1]); }
};

// [g_c, g, b, c]: addcdiv's gradient of tensor2, −g·(value·b/(c·c)) (value·b: the number rounded on CUDA).
template <typename T, typename S = T>
struct AddcdivGradTensor2 {
  static constexpr int kOut = 1, kIn = 3;
  coef_t<T> value;
  explicit AddcdivGradTensor2(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    out[0] = -in[0] * rounded<S>(rounded<S>(value * in[1]) / rounded<S>(in[2] * in[2]));
  }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const {
    out[0] = -in[0] * rounded<S>(rounded<S>(cuda_number<S>(value) * in[1]) / rounded<S>(in[2] * in[2]));
  }
};

// [g_b, g_c, g, b, c]: both, in one pass.
template <typename T, typename S = T>
struct AddcdivGrads {
  static constexpr int kOut = 2, kIn = 3;
  coef_t<T> value;
  explicit AddcdivGrads(const Scalars& s) : value(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    out[0] = in[0] * rounded<S>(rounded<S>(value) / in[2]);
    out[1] = -in[0] * rounded<S>(rounded<S>(value * in[1]) / rounded<S>(in[2] * in[2]));
  }
  C10_HOST_DEVICE void cuda(const T* in, T* out) const {
    out[0] = in[0] * rounded<S>(rounded<S>(value) / in[2]);
    out[1] = -in[0] * rounded<S>(rounded<S>(cuda_number<S>(value) * in[1]) / rounded<S>(in[2] * in[2]));
  }
};

// torch.lerp's formula, whose two forms keep the result exact at weight 0 and 1: a + w·(b−a) for |w| < 0.5,
// else b − (b−a)·(1−w). A number weight picks the form once (two formulas); a tensor weight selects per
// element, computing both so that the loop vectorises without branches.
template <typename T, typename S = T>
struct LerpSmallWeight {
  static constexpr int kOut = 1, kIn = 2;
  coef_t<T> weight;
  C10_HOST_DEVICE explicit LerpSmallWeight(const Scalars& s) : weight(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const { out[0] = in[0] + weight * (in[1] - in[0]); }
};

template <typename T, typename S = T>
struct LerpLargeWeight {
  static constexpr int kOut = 1, kIn = 2;
  coef_t<T> weight;
  C10_HOST_DEVICE explicit LerpLargeWeight(const Scalars& s) : weight(static_cast<coef_t<T>>(s[0])) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    out[0] = in[1] - (in[1] - in[0]) * (coef_t<T>(1) - weight);
  }
};

// A number weight whose form is picked once per instance (the foreach kernels build one per member):
// exactly lerp.Scalar's choice, which compares the weight in opmath.
template <typename T, typename S = T>
struct LerpScalarWeight {
  static constexpr int kOut = 1, kIn = 2;
  LerpSmallWeight<T> small;
  LerpLargeWeight<T> large;
  bool use_small;
  C10_HOST_DEVICE explicit LerpScalarWeight(const Scalars& s)
      : small(s), large(s), use_small(std::abs(static_cast<coef_t<T>>(s[0])) < coef_t<T>(0.5)) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    if (use_small) {
      small(in, out);
    } else {
      large(in, out);
    }
  }
};

// [out, a, b, w].
template <typename T, typename S = T>
struct LerpTensorWeight {
  static constexpr int kOut = 1, kIn = 3;
  explicit LerpTensorWeight(const Scalars&) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    const T a = in[0], b = in[1], w = in[2];
    const T d = b - a;
    const T small = a + w * d;
    const T large = b - d * (T(1) - w);
    out[0] = std::abs(w) < T(0.5) ? small : large;
  }
};

// Gradients of lerp with a tensor weight. Mask bits: 1 = input, 2 = end, 4 = weight. Outputs [g_a? g_b? g_w?]
// for the set bits; inputs g, then a, b (bit 4), then w (bits 1 or 2):
// g_a = g·(1−w), g_b = g·w, g_w = g·(b−a).
template <typename T, int Mask, typename S = T>
struct LerpBackward {
  static constexpr bool kEnds = (Mask & 4) != 0, kWeight = (Mask & 3) != 0;
  static constexpr int kIn = 1 + (kEnds ? 2 : 0) + (kWeight ? 1 : 0);
  static constexpr int kOut = (Mask & 1) + ((Mask >> 1) & 1) + ((Mask >> 2) & 1);
  explicit LerpBackward(const Scalars&) {}
  C10_HOST_DEVICE void operator()(const T* in, T* out) const {
    const T& g = in[0];
    int o = 0;
    if constexpr ((Mask & 1) != 0) out[o++] = g * rounded<S>(coef_t<T>(1) - in[kIn - 1]);
    if constexpr ((Mask & 2) != 0) out[o++] = g * in[kIn - 1];
    if constexpr ((Mask & 4) != 0) out[o++] = g * rounded<S>(in[2] - in[1]);
  }
};
template <typename T, typename S = T>
using LerpBackward1 = LerpBackward<T, 1, S>;
template <typename T, typename S = T>
using LerpBackward2 = LerpBackward<T, 2, S>;
template <typename T, typename S = T>
using LerpBackward3 = LerpBackward<T, 3, S>;
template <typename T, typename S = T>
using LerpBackward4 = LerpBackward<T, 4, S>;
template <typename T, typename S = T>
using LerpBackward5 = LerpBackward<T, 5, S>;
template <typename T, typename S = T>
using LerpBackward6 = LerpBackward<T, 6, S>;
template <typename T, typename S = T>
using LerpBackward7 = LerpBackward<T, 7, S>;

}  // namespace safe_ops::formulas

// (stub name, formula): every pointwise kernel of the library.
#define SAFE_OPS_POINTWISE_FORMULAS(_)        \
  _(addcmul, Addcmul)                         \
  _(addcmul_grad_one, AddcmulGradOne)         \
  _(addcmul_grads, AddcmulGrads)              \
  _(addcdiv, Addcdiv)                         \
  _(addcdiv_grad_tensor1, AddcdivGradTensor1) \
  _(addcdiv_grad_tensor2, AddcdivGradTensor2) \
  _(addcdiv_grads, AddcdivGrads)              \
  _(lerp_small_weight, LerpSmallWeight)       \
  _(lerp_large_weight, LerpLargeWeight)       \
  _(lerp_tensor_weight, LerpTensorWeight)     \
  _(lerp_backward_1, LerpBackward1)           \
  _(lerp_backward_2, LerpBackward2)           \
  _(lerp_backward_3, LerpBackward3)           \
  _(lerp_backward_4, LerpBackward4)           \
  _(lerp_backward_5, LerpBackward5)           \
  _(lerp_backward_6, LerpBackward6)           \
  _(lerp_backward_7, LerpBackward7)
