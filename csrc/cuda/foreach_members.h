// A ForeachGroup (csrc/core/dispatch_stubs.h) as the packer's members (foreach_body.h): shared by the CUDA kernels and
// the host simulation.
#pragma once

#include <vector>

#include "core/dispatch_stubs.h"
#include "cuda/foreach_body.h"

namespace safe_ops {
namespace foreach_detail {

template <int N>
std::vector<Member<N>> members_of(const ForeachGroup& g) {
  constexpr int K = N - 1;
  TORCH_INTERNAL_ASSERT(g.noperands == K, "safe_ops: foreach operand count mismatch");
  const bool device_values = g.scalar_tensor.defined();
  std::vector<Member<N>> members(g.members.size());
  for (size_t i = 0; i < g.members.size(); ++i) {
    Member<N>& m = members[i];
    m.ptr[0] = g.members[i].data_ptr();
    for (int k = 0; k < K; ++k) m.ptr[k + 1] = const_cast<void*>(g.operands[i * K + k].const_data_ptr());
    m.numel = g.members[i].numel();
    m.scalar = device_values ? 0.0 : g.scalars[i];
    m.index = device_values ? g.index[i] : 0;
  }
  return members;
}

}  // namespace foreach_detail
}  // namespace safe_ops
