// CUDA foreach kernels: the __global__ wrapper of foreach_body.h's chunk walker and the launches of each group's
// members as pack_launches() packs them.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "core/dispatch_stubs.h"
#include "cuda/foreach_body.h"
#include "cuda/foreach_members.h"

namespace safe_ops {
namespace {

using namespace foreach_detail;

template <typename scalar_t, typename operand_t, template <typename...> class Formula, int N>
__global__ void __launch_bounds__(kThreads) foreach_kernel(Meta<N> meta, const double* values) {
  const GridPos pos{blockIdx.x, gridDim.x, static_cast<int>(threadIdx.x)};
  foreach_body<scalar_t, operand_t, Formula>(pos, cuda_detail::DirectMem{}, meta, values);
}

template <template <typename...> class Formula>
void foreach_cuda(const ForeachGroup& g) {
  if (g.members.empty()) return;
  const c10::cuda::CUDAGuard guard(g.members[0].device());
  constexpr int N = Formula<float>::kIn;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const double* values = g.scalar_tensor.defined() ? g.scalar_tensor.const_data_ptr<double>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.dtype, "safe_ops_foreach_cuda", [&] {
    using member_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.operand_dtype, "safe_ops_foreach_cuda_operand", [&] {
      pack_launches<N>(members_of<N>(g), [&](const Meta<N>& meta, int nblocks) {
        foreach_kernel<member_t, scalar_t, Formula, N><<<nblocks, kThreads, 0, stream>>>(meta, values);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

}  // namespace

#define SAFE_OPS_REGISTER_CUDA_FOREACH(base, formula, nlists) \
  SAFE_OPS_REGISTER_KERNEL(foreach_##base##_stub, CUDA, foreach_cuda<formulas::formula>);
SAFE_OPS_FOREACH_OPS(SAFE_OPS_REGISTER_CUDA_FOREACH)
#undef SAFE_OPS_REGISTER_CUDA_FOREACH

}  // namespace safe_ops
