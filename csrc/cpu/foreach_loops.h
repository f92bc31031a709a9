// The contiguous inner loop of the CPU foreach kernels (foreach_kernels.cpp), included twice like
// contiguous_loops.h: baseline x86-64 and `#pragma GCC target("avx2,fma")`, in namespaces SAFE_OPS_ISA. Raw
// pointers only; fused multiply-adds where contiguous_loops.h has them, so members get the per-tensor op's bits.
// (No include guard: included once per ISA.)

namespace safe_ops {
namespace SAFE_OPS_ISA {

// self[j] = f(self[j], ops[0][j], ..)[0] for one run of a member, in op_t, rounded once to the member's type.
// `ivdep`: an operand may be the member itself (foreach_add_(xs, xs)), but only element for element.
template <int K, typename op_t, typename scalar_t, typename operand_t, typename F>
void foreach_block(scalar_t* self, const operand_t* const* ops, int64_t len, const F& f) {
  std::array<const operand_t*, K> p;
  for (int k = 0; k < K; ++k) p[k] = ops[k];
#pragma GCC ivdep
  for (int64_t j = 0; j < len; ++j) {
    op_t in[K + 1];
    in[0] = static_cast<op_t>(self[j]);
    for (int k = 0; k < K; ++k) in[k + 1] = static_cast<op_t>(p[k][j]);
    op_t out[1];
    f(in, out);
    self[j] = static_cast<scalar_t>(out[0]);
  }
}

}  // namespace SAFE_OPS_ISA
}  // namespace safe_ops
