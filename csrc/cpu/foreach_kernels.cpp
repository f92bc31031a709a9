// CPU foreach kernels: one at::parallel_for over all members of a group, split by bytes moved (not by member, so
// many small tensors still keep every core busy), each thread walking its byte range member by member through the
// vectorised contiguous loop. csrc/ops/foreach.cpp hands over dense members only (strided ones as dense copies).
#include "core/dispatch_stubs.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#define SAFE_OPS_LOOPS "foreach_loops.h"
#include "cpu/isa_loops.h"  // the loops once per instruction set, and SAFE_OPS_PICK
#undef SAFE_OPS_LOOPS

namespace safe_ops {
namespace {

// Bytes per task of the parallel split: small enough that 142 small tensors spread over the cores, big enough
// that a task is not dominated by its start-up.
constexpr int64_t kGrainBytes = 64 << 10;

// The arithmetic type: at::opmath_type of the member, or double when an operand is double.
template <typename scalar_t, typename operand_t>
using mixed_opmath_t = std::conditional_t<std::is_same_v<operand_t, double>, double, at::opmath_type<scalar_t>>;

template <template <typename...> class Formula, typename scalar_t, typename operand_t>
void foreach_loop(const ForeachGroup& g) {
  using op_t = mixed_opmath_t<scalar_t, operand_t>;
  using F = Formula<op_t>;
  constexpr int K = F::kIn - 1;
  TORCH_INTERNAL_ASSERT(g.noperands == K && F::kOut == 1, "safe_ops: foreach operand count mismatch");
  const int64_t n = static_cast<int64_t>(g.members.size());
  // Read and write the member, read the operands.
  constexpr int64_t bpe = 2 * sizeof(scalar_t) + K * sizeof(operand_t);
  std::vector<int64_t> start(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) start[i + 1] = start[i] + g.members[i].numel() * bpe;
  const double* device_values = g.scalar_tensor.defined() ? g.scalar_tensor.const_data_ptr<double>() : nullptr;
  const auto block = SAFE_OPS_PICK(foreach_block<K, op_t, scalar_t, operand_t, F>);
  at::parallel_for(0, start[n], kGrainBytes, [&](int64_t begin, int64_t end) {
    // Element j of member i belongs to the range holding byte start[i] + j·bpe.
    int64_t i = std::upper_bound(start.begin(), start.end(), begin) - start.begin() - 1;
    for (; i < n && start[i] < end; ++i) {
      const int64_t numel = (start[i + 1] - start[i]) / bpe;
      const int64_t lo = begin > start[i] ? (begin - start[i] + bpe - 1) / bpe : 0;
      const int64_t hi = std::min(numel, (end - start[i] + bpe - 1) / bpe);
      if (hi <= lo) continue;
      const double s = device_values != nullptr ? device_values[g.index[i]] : g.scalars[i];
      const F f(formulas::Scalars{s, 0.0});
      std::array<const operand_t*, K> ops;
      for (int k = 0; k < K; ++k) ops[k] = g.operands[i * K + k].const_data_ptr<operand_t>() + lo;
      block(g.members[i].data_ptr<scalar_t>() + lo, ops.data(), hi - lo, f);
    }
  });
}

template <template <typename...> class Formula>
void foreach_kernel(const ForeachGroup& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.dtype, "safe_ops_foreach", [&] {
    using member_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.operand_dtype, "safe_ops_foreach_operand",
                                    [&] { foreach_loop<Formula, member_t, scalar_t>(g); });
  });
}

}  // namespace

#define SAFE_OPS_REGISTER_CPU_FOREACH(base, formula, nlists) \
  SAFE_OPS_REGISTER_KERNEL(foreach_##base##_stub, CPU, foreach_kernel<formulas::formula>);
SAFE_OPS_FOREACH_OPS(SAFE_OPS_REGISTER_CPU_FOREACH)
#undef SAFE_OPS_REGISTER_CPU_FOREACH

}  // namespace safe_ops
