// CPU kernels. Every loop runs inside TensorIterator::for_each (which splits the work with at::parallel_for)
// and has two bodies: a contiguous one, written so the compiler vectorises it, and a strided one for
// broadcast / transposed operands. Arithmetic is in at::opmath_type (float for half/bfloat16).
#include "core/dispatch_stubs.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#define SAFE_OPS_LOOPS "contiguous_loops.h"
#include "cpu/isa_loops.h"  // the loops once per instruction set, and SAFE_OPS_PICK
#undef SAFE_OPS_LOOPS

namespace safe_ops {
namespace {

// Elements per accumulator block in the K-input loops: the block's opmath accumulator stays in L1 while the
// K inputs stream through it once.
constexpr int64_t kBlock = 4096;
// Bytes streamed by one K-input call from which an in-place call prefetches its inputs: above the L2 of a core or
// two.
constexpr int64_t kPrefetchFromBytes = 4 << 20;
// Fixed chunk for the reductions, so the summation order (and the result) does not depend on thread count.
constexpr int64_t kReduceChunk = 1 << 16;

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

bool all_contiguous(const int64_t* strides, int ntensors, int64_t element_size) {
  for (int i = 0; i < ntensors; ++i) {
    if (strides[i] != element_size) return false;
  }
  return true;
}

template <typename scalar_t>
opmath_t<scalar_t> load(const char* base, int64_t stride, int64_t j) {
  return static_cast<opmath_t<scalar_t>>(*reinterpret_cast<const scalar_t*>(base + j * stride));
}

template <typename T>
c10::SmallVector<T, 8> coefficients(const LinearCoeffs& c, int64_t k) {
  c10::SmallVector<T, 8> w(k);
  if (c.weights_tensor.defined()) {
    const double* p = c.weights_tensor.const_data_ptr<double>();
    for (int64_t i = 0; i < k; ++i) w[i] = static_cast<T>(p[i]);
  } else {
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(c.weights.size()) == k);
    for (int64_t i = 0; i < k; ++i) w[i] = static_cast<T>(c.weights[i]);
  }
  return w;
}

// out = Σ w_i·x_i (+ alpha·scalar), summed left to right from w_0·x_0 so that alpha = 1 adds match torch.add bit
// for bit. Contiguous blocks: each input is read once, the block's opmath sum stays in L1.
template <typename scalar_t>
void linear_combination_loop(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  using op_t = opmath_t<scalar_t>;
  const int k = iter.ninputs();
  // Small vectors: no heap allocation per call for K <= 8 (a tiny add_ is dominated by per-call costs).
  const c10::SmallVector<op_t, 8> w = coefficients<op_t>(c, k);
  const bool has_scalar = c.has_scalar;
  const op_t scalar_value = static_cast<op_t>(c.scalar_value), scalar_alpha = static_cast<op_t>(c.scalar_alpha);
  // In-place calls (out is also the first input) on operands beyond the caches prefetch each input ahead
  // (contiguous_loops.h). Measured on the 2-core Xeon VM, prefetch on against off: add_ and accumulate_ K=2/K=8
  // at 1M-16M floats 1.01-1.10x; a functional call writing a fresh result 0.86-0.94x (add, K=3 at 1M-4M),
  // where the stores' own line fills compete with the prefetches; cache-resident operands (a 64K add) would only
  // pay for the extra instructions.
  const bool streamed = iter.numel() * (k + 1) * static_cast<int64_t>(sizeof(scalar_t)) >= kPrefetchFromBytes;
  const auto accumulate_block = SAFE_OPS_PICK(accumulate_block<scalar_t>);
  const auto strided = SAFE_OPS_PICK(linear_strided<scalar_t>);
  iter.for_each([&](char** data, const int64_t* strides, int64_t n) {
    if (all_contiguous(strides, k + 1, sizeof(scalar_t))) {
      scalar_t* out = reinterpret_cast<scalar_t*>(data[0]);
      const bool prefetch = streamed && data[0] == data[1];
      c10::SmallVector<const scalar_t*, 8> x(k);
      op_t acc[kBlock];
      for (int64_t b = 0; b < n; b += kBlock) {
        for (int i = 0; i < k; ++i) x[i] = reinterpret_cast<const scalar_t*>(data[1 + i]) + b;
        accumulate_block(acc, out + b, x.data(), w.data(), k, std::min(kBlock, n - b), prefetch, has_scalar,
                         scalar_value, scalar_alpha);
      }
      return;
    }
    strided(data, strides, n, k, w.data(), has_scalar, scalar_value, scalar_alpha);
  });
}

void linear_combination_kernel(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, iter.common_dtype(), "safe_ops_linear_combination",
                                  [&] { linear_combination_loop<scalar_t>(iter, c); });
}

// out_i = s_i·g for K outputs, reading g once.
template <typename scalar_t>
void scale_many_loop(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  using op_t = opmath_t<scalar_t>;
  const int k = iter.noutputs();
  const c10::SmallVector<op_t, 8> s = coefficients<op_t>(c, k);
  const auto scale_block = SAFE_OPS_PICK(scale_block<scalar_t>);
  iter.for_each([&](char** data, const int64_t* strides, int64_t n) {
    if (all_contiguous(strides, k + 1, sizeof(scalar_t))) {
      const scalar_t* g = reinterpret_cast<const scalar_t*>(data[k]);
      c10::SmallVector<scalar_t*, 8> out(k);
      for (int64_t b = 0; b < n; b += kBlock) {
        for (int i = 0; i < k; ++i) out[i] = reinterpret_cast<scalar_t*>(data[i]) + b;
        scale_block(out.data(), g + b, s.data(), k, std::min(kBlock, n - b));
      }
      return;
    }
    for (int64_t j = 0; j < n; ++j) {
      const op_t gj = load<scalar_t>(data[k], strides[k], j);
      for (int i = 0; i < k; ++i) {
        *reinterpret_cast<scalar_t*>(data[i] + j * strides[i]) = static_cast<scalar_t>(s[i] * gj);
      }
    }
  });
}

void scale_many_kernel(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, iter.common_dtype(), "safe_ops_scale_many",
                                  [&] { scale_many_loop<scalar_t>(iter, c); });
}

// result[i] += Σ g·x_i, in double, over fixed chunks summed in order (deterministic).
template <typename scalar_t>
void dot_many_loop(at::TensorIteratorBase& iter, const at::Tensor& result) {
  const int k = iter.ninputs() - 1;
  const int64_t numel = iter.numel();
  const int64_t nchunks = (numel + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(static_cast<size_t>(nchunks * k), 0.0);
  const auto dot_block = SAFE_OPS_PICK(dot_block<scalar_t>);
  at::parallel_for(0, nchunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      double* sums = partial.data() + chunk * k;
      auto loop = [&](char** data, const int64_t* strides, int64_t n) {
        if (all_contiguous(strides, k + 1, sizeof(scalar_t))) {
          const scalar_t* g = reinterpret_cast<const scalar_t*>(data[0]);
          std::vector<const scalar_t*> x(k);
          for (int64_t b = 0; b < n; b += kBlock) {  // g's block stays in L1 across the K inputs
            for (int i = 0; i < k; ++i) x[i] = reinterpret_cast<const scalar_t*>(data[1 + i]) + b;
            dot_block(g + b, x.data(), sums, k, std::min(kBlock, n - b));
          }
          return;
        }
        for (int64_t j = 0; j < n; ++j) {
          const double gj = static_cast<double>(*reinterpret_cast<const scalar_t*>(data[0] + j * strides[0]));
          for (int i = 0; i < k; ++i) {
            sums[i] += gj * static_cast<double>(*reinterpret_cast<const scalar_t*>(data[1 + i] + j * strides[1 + i]));
          }
        }
      };
      iter.serial_for_each(loop, {chunk * kReduceChunk, std::min(numel, (chunk + 1) * kReduceChunk)});
    }
  });
  double* out = result.data_ptr<double>();
  for (int64_t chunk = 0; chunk < nchunks; ++chunk) {
    for (int i = 0; i < k; ++i) out[i] += partial[chunk * k + i];
  }
}

void dot_many_kernel(at::TensorIteratorBase& iter, const at::Tensor& result) {
  if (iter.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, iter.common_dtype(), "safe_ops_dot_many",
                                  [&] { dot_many_loop<scalar_t>(iter, result); });
}

// Elementwise map of NIN opmath inputs to NOUT outputs; operands are [outputs..., inputs...]. Runs whose
// operands are all contiguous, or inputs broadcast along the run (stride 0: a number-like tensor weight), go
// through map_block (vectorised, ISA-dispatched); anything else through the strided loop.
template <int NOUT, int NIN, typename scalar_t, typename F>
void map_elementwise(at::TensorIteratorBase& iter, const F& f) {
  constexpr int N = NOUT + NIN;
  constexpr int64_t kRun = 1024;  // elements per map_block call (broadcast inputs are spread over this many)
  TORCH_INTERNAL_ASSERT(iter.ntensors() == N && iter.noutputs() == NOUT);
  const auto block = SAFE_OPS_PICK(map_block<NOUT, NIN, scalar_t, F>);
  const auto strided = SAFE_OPS_PICK(map_strided<NOUT, NIN, scalar_t, F>);
  iter.for_each([&](char** data, const int64_t* strides, int64_t n) {
    constexpr int64_t es = sizeof(scalar_t);
    bool blockwise = all_contiguous(strides, NOUT, es);
    for (int i = NOUT; i < N; ++i) blockwise = blockwise && (strides[i] == es || strides[i] == 0);
    if (blockwise) {
      std::array<std::vector<scalar_t>, NIN> broadcast;
      std::array<scalar_t*, NOUT> out;
      std::array<const scalar_t*, NIN> in;
      for (int i = 0; i < NIN; ++i) {
        if (strides[NOUT + i] == 0) broadcast[i].assign(kRun, *reinterpret_cast<const scalar_t*>(data[NOUT + i]));
      }
      for (int64_t b = 0; b < n; b += kRun) {
        for (int o = 0; o < NOUT; ++o) out[o] = reinterpret_cast<scalar_t*>(data[o]) + b;
        for (int i = 0; i < NIN; ++i) {
          in[i] = strides[NOUT + i] == 0 ? broadcast[i].data() : reinterpret_cast<const scalar_t*>(data[NOUT + i]) + b;
        }
        block(out.data(), in.data(), std::min(kRun, n - b), f);
      }
      return;
    }
    strided(data, strides, n, f);
  });
}

// A formula of csrc/core/formulas.h over the whole iterator, in opmath.
template <template <typename...> class Formula>
void pointwise_kernel(at::TensorIteratorBase& iter, const formulas::Scalars& scalars) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, iter.common_dtype(), "safe_ops_pointwise", [&] {
    using op_t = opmath_t<scalar_t>;
    using F = Formula<op_t, scalar_t>;
    const F formula(scalars);
    map_elementwise<F::kOut, F::kIn, scalar_t>(iter, [formula](const std::array<op_t, F::kIn>& x) {
      std::array<op_t, F::kOut> y;
      formula(x.data(), y.data());
      return y;
    });
  });
}

}  // namespace

SAFE_OPS_REGISTER_KERNEL(linear_combination_stub, CPU, linear_combination_kernel);
SAFE_OPS_REGISTER_KERNEL(scale_many_stub, CPU, scale_many_kernel);
SAFE_OPS_REGISTER_KERNEL(dot_many_stub, CPU, dot_many_kernel);
#define SAFE_OPS_REGISTER_CPU_POINTWISE(name, formula) \
  SAFE_OPS_REGISTER_KERNEL(name##_stub, CPU, pointwise_kernel<formulas::formula>);
SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_REGISTER_CPU_POINTWISE)
#undef SAFE_OPS_REGISTER_CPU_POINTWISE

}  // namespace safe_ops
