// The inner loops of the CPU kernels, included twice by elementwise_kernels.cpp (isa_loops.h): for the baseline x86-64
// target and under `#pragma GCC target("avx2,fma")`, in namespaces SAFE_OPS_ISA = baseline / avx2. Only plain
// loops over raw pointers live here: nothing from a library is first instantiated under the AVX2 target. In the
// avx2 loops `a + b*c` is one fused multiply-add (the build contracts, -ffp-contract=fast), as in torch's
// vectorised CPU kernels; the strided loops are here too, because torch fuses its scalar loops as well.
// (No include guard: included once per ISA.)

namespace safe_ops {
namespace SAFE_OPS_ISA {

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// acc + w·x, rounded once where torch fuses (torch's fmadd(other, alpha, self)). Explicit, not left to
// contraction: in w0·x0 + w1·x1 the compiler may fuse either product, and it hoists a loop-invariant product.
template <typename op_t>
inline op_t mul_add(op_t w, op_t x, op_t acc) {
#if SAFE_OPS_FUSED
  return std::fma(w, x, acc);
#else
  return acc + w * x;
#endif
}

// v + value·alpha for add.Scalar.
template <typename op_t>
inline op_t add_scalar_term(op_t v, op_t value, op_t alpha) {
  return mul_add(value, alpha, v);
}

// Adds inputs x[0..G) of one block, elements [begin, end), to the running sum, left to right: acc (or nothing,
// for the first group) + w_0·x_0 + ... + w_{G-1}·x_{G-1}. Up to eight inputs per pass keep the accumulator traffic
// low; the last group stores straight to out, rounding once.
template <int G, bool kFirst, bool kLast, typename scalar_t>
inline void accumulate_range(opmath_t<scalar_t>* acc, scalar_t* out, const scalar_t* const* x,
                             const opmath_t<scalar_t>* w, int64_t begin, int64_t end, bool has_scalar,
                             opmath_t<scalar_t> scalar_value, opmath_t<scalar_t> scalar_alpha) {
  using op_t = opmath_t<scalar_t>;
#pragma GCC ivdep  // out may be x[0] (in place), element for element
  for (int64_t j = begin; j < end; ++j) {
    op_t v = kFirst ? w[0] * static_cast<op_t>(x[0][j]) : mul_add(w[0], static_cast<op_t>(x[0][j]), acc[j]);
    if constexpr (G > 1) v = mul_add(w[1], static_cast<op_t>(x[1][j]), v);
    if constexpr (G > 2) v = mul_add(w[2], static_cast<op_t>(x[2][j]), v);
    if constexpr (G > 3) v = mul_add(w[3], static_cast<op_t>(x[3][j]), v);
    if constexpr (G > 4) v = mul_add(w[4], static_cast<op_t>(x[4][j]), v);
    if constexpr (G > 5) v = mul_add(w[5], static_cast<op_t>(x[5][j]), v);
    if constexpr (G > 6) v = mul_add(w[6], static_cast<op_t>(x[6][j]), v);
    if constexpr (G > 7) v = mul_add(w[7], static_cast<op_t>(x[7][j]), v);
    if constexpr (kLast) {
      if (has_scalar) v = add_scalar_term(v, scalar_value, scalar_alpha);  // +0 would turn -0.0 into +0.0
      out[j] = static_cast<scalar_t>(v);
    } else {
      acc[j] = v;
    }
  }
}

// How far ahead (bytes) each input stream is prefetched when an in-place call's operands come from memory
// (csrc/cpu/elementwise_kernels.cpp decides when). With up to nine streams in one pass the hardware prefetchers alone
// left accumulate_ K=8 at 1M-4M floats ~10% short (2-core Xeon VM: 1.80-1.95x the add_ loop without, 1.98-2.18x with
// 1-2 KB ahead, one process alternating).
constexpr int64_t kPrefetchBytes = 2048;

// accumulate_range over one block's [0, len); `prefetch` issues one prefetch per cache line of every input,
// kPrefetchBytes ahead of the line being summed.
template <int G, bool kFirst, bool kLast, typename scalar_t>
void accumulate_group(opmath_t<scalar_t>* acc, scalar_t* out, const scalar_t* const* x, const opmath_t<scalar_t>* w,
                      int64_t len, bool prefetch, bool has_scalar, opmath_t<scalar_t> scalar_value,
                      opmath_t<scalar_t> scalar_alpha) {
  if (!prefetch) {
    return accumulate_range<G, kFirst, kLast>(acc, out, x, w, 0, len, has_scalar, scalar_value, scalar_alpha);
  }
  constexpr int64_t kLine = 64 / sizeof(scalar_t), kLinesPerChunk = 4, kChunk = kLinesPerChunk * kLine;
  constexpr int64_t kAhead = kPrefetchBytes / sizeof(scalar_t);
  for (int64_t begin = 0; begin < len; begin += kChunk) {
    for (int i = 0; i < G; ++i) {
      for (int64_t l = 0; l < kLinesPerChunk; ++l) __builtin_prefetch(x[i] + begin + kAhead + l * kLine);
    }
    const int64_t end = begin + kChunk < len ? begin + kChunk : len;
    accumulate_range<G, kFirst, kLast>(acc, out, x, w, begin, end, has_scalar, scalar_value, scalar_alpha);
  }
}

template <bool kFirst, bool kLast, typename scalar_t>
void accumulate_group(int g, opmath_t<scalar_t>* acc, scalar_t* out, const scalar_t* const* x,
                      const opmath_t<scalar_t>* w, int64_t len, bool prefetch, bool has_scalar,
                      opmath_t<scalar_t> scalar_value, opmath_t<scalar_t> scalar_alpha) {
  switch (g) {
    case 1:
      return accumulate_group<1, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 2:
      return accumulate_group<2, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 3:
      return accumulate_group<3, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 4:
      return accumulate_group<4, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 5:
      return accumulate_group<5, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 6:
      return accumulate_group<6, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    case 7:
      return accumulate_group<7, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    default:
      return accumulate_group<8, kFirst, kLast>(acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
  }
}

// out[0..len) = Σ w_i·x_i[0..len) (+ scalar term) for one block: the running sum in
// `acc` (opmath, at least len entries), left to right as the strided loop sums. Inputs up to eight at a time:
// on the 2-core EPYC dev machine more inputs per pass beat fewer (fewer trips through acc).
template <typename scalar_t>
void accumulate_block(opmath_t<scalar_t>* acc, scalar_t* out, const scalar_t* const* x, const opmath_t<scalar_t>* w,
                      int k, int64_t len, bool prefetch, bool has_scalar, opmath_t<scalar_t> scalar_value,
                      opmath_t<scalar_t> scalar_alpha) {
  constexpr int kMaxGroup = 8;
  const int ngroups = (k + kMaxGroup - 1) / kMaxGroup;
  const int group = (k + ngroups - 1) / ngroups;  // balanced: 9 inputs as 5 + 4, not 8 + 1
  for (int i = 0; i < k; i += group) {
    const int g = k - i < group ? k - i : group;
    const bool first = i == 0, last = i + g == k;
    if (first && last) {
      accumulate_group<true, true>(g, acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    } else if (first) {
      accumulate_group<true, false>(g, acc, out, x, w, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    } else if (last) {
      accumulate_group<false, true>(g, acc, out, x + i, w + i, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    } else {
      accumulate_group<false, false>(g, acc, out, x + i, w + i, len, prefetch, has_scalar, scalar_value, scalar_alpha);
    }
  }
}

// out_i = s_i·g for the K outputs of one block, g read once (it stays in L1 across the K outputs).
template <typename scalar_t>
void scale_block(scalar_t* const* out, const scalar_t* g, const opmath_t<scalar_t>* s, int k, int64_t len) {
  using op_t = opmath_t<scalar_t>;
  for (int i = 0; i < k; ++i) {
    scalar_t* o = out[i];
    const op_t si = s[i];
    for (int64_t j = 0; j < len; ++j) o[j] = static_cast<scalar_t>(si * static_cast<op_t>(g[j]));
  }
}

// sums[i] += Σ_j g[j]·x_i[j] for G inputs in one pass over g's block, in float64 with eight independent partial
// sums (lanes) per input, so the loop vectorises without reassociating a single sum: the order is fixed and the
// result the same on every run. Several inputs per pass, as in accumulate_block: fewer, wider passes stream
// better here.
template <int G, typename scalar_t>
void dot_group(const scalar_t* g, const scalar_t* const* x, double* sums, int64_t len) {
  using op_t = opmath_t<scalar_t>;
  constexpr int kLanes = 8;
  double lanes[G][kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    double gj[kLanes];
    for (int l = 0; l < kLanes; ++l) gj[l] = static_cast<double>(static_cast<op_t>(g[j + l]));
    for (int i = 0; i < G; ++i) {
      for (int l = 0; l < kLanes; ++l) lanes[i][l] += gj[l] * static_cast<double>(static_cast<op_t>(x[i][j + l]));
    }
  }
  for (int i = 0; i < G; ++i) {
    double sum = 0;
    for (int64_t t = j; t < len; ++t) {
      sum += static_cast<double>(static_cast<op_t>(g[t])) * static_cast<double>(static_cast<op_t>(x[i][t]));
    }
    for (int l = 0; l < kLanes; ++l) sum += lanes[i][l];
    sums[i] += sum;
  }
}

template <typename scalar_t>
void dot_block(const scalar_t* g, const scalar_t* const* x, double* sums, int k, int64_t len) {
  int i = 0;
  for (; i + 4 <= k; i += 4) dot_group<4>(g, x + i, sums + i, len);
  switch (k - i) {
    case 3: return dot_group<3>(g, x + i, sums + i, len);
    case 2: return dot_group<2>(g, x + i, sums + i, len);
    case 1: return dot_group<1>(g, x + i, sums + i, len);
    default: return;
  }
}

// out_o[0..len) = f(in_0[j], .., in_{NIN-1}[j])_o. `ivdep`: an output may be an input (in-place ops), but only
// element for element, which is no loop-carried dependence; without it the compiler's alias check sends
// in-place calls to scalar code.
template <int NOUT, int NIN, typename scalar_t, typename F>
void map_block(scalar_t* const* out, const scalar_t* const* in, int64_t len, const F& f) {
  using op_t = opmath_t<scalar_t>;
  std::array<scalar_t*, NOUT> o;
  std::array<const scalar_t*, NIN> p;
  for (int k = 0; k < NOUT; ++k) o[k] = out[k];
  for (int i = 0; i < NIN; ++i) p[i] = in[i];
#pragma GCC ivdep
  for (int64_t j = 0; j < len; ++j) {
    std::array<op_t, NIN> v;
    for (int i = 0; i < NIN; ++i) v[i] = static_cast<op_t>(p[i][j]);
    const std::array<op_t, NOUT> r = f(v);
    for (int k = 0; k < NOUT; ++k) o[k][j] = static_cast<scalar_t>(r[k]);
  }
}

template <typename scalar_t>
opmath_t<scalar_t> load_strided(const char* base, int64_t stride, int64_t j) {
  return static_cast<opmath_t<scalar_t>>(*reinterpret_cast<const scalar_t*>(base + j * stride));
}

// The strided loop of linear_combination: operands [out, x_0 .. x_{k-1}], summed left to right.
template <typename scalar_t>
void linear_strided(char** data, const int64_t* strides, int64_t n, int k, const opmath_t<scalar_t>* w, bool has_scalar,
                    opmath_t<scalar_t> scalar_value, opmath_t<scalar_t> scalar_alpha) {
  using op_t = opmath_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) {
    op_t acc = w[0] * load_strided<scalar_t>(data[1], strides[1], j);
    for (int i = 1; i < k; ++i) acc = mul_add(w[i], load_strided<scalar_t>(data[1 + i], strides[1 + i], j), acc);
    if (has_scalar) acc = add_scalar_term(acc, scalar_value, scalar_alpha);
    *reinterpret_cast<scalar_t*>(data[0] + j * strides[0]) = static_cast<scalar_t>(acc);
  }
}

// The strided loop of map_elementwise: operands [outputs..., inputs...].
template <int NOUT, int NIN, typename scalar_t, typename F>
void map_strided(char** data, const int64_t* strides, int64_t n, const F& f) {
  using op_t = opmath_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) {
    std::array<op_t, NIN> x;
    for (int i = 0; i < NIN; ++i) x[i] = load_strided<scalar_t>(data[NOUT + i], strides[NOUT + i], j);
    const std::array<op_t, NOUT> y = f(x);
    for (int o = 0; o < NOUT; ++o) *reinterpret_cast<scalar_t*>(data[o] + j * strides[o]) = static_cast<scalar_t>(y[o]);
  }
}

}  // namespace SAFE_OPS_ISA
}  // namespace safe_ops
