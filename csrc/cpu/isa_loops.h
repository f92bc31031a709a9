// Compiles the loop header named by SAFE_OPS_LOOPS twice: for baseline x86-64 and under
// `#pragma GCC target("avx2,fma")` with `a + b*c` contracted to one fused multiply-add, in namespaces
// safe_ops::baseline and safe_ops::avx2 (the header uses SAFE_OPS_ISA as its namespace), and defines
// safe_ops::use_avx2(), which picks one at run time. The module is built for baseline x86-64 so it loads on any
// CPU. The choice follows torch's own CPU capability: where torch runs its AVX2/AVX512 kernels, which fuse
// a + alpha*b, addcmul and lerp into FMAs, so do these loops (the same bits as torch); where torch runs its
// DEFAULT kernels (no FMA, or ATEN_CPU_CAPABILITY=default), the baseline loops round every product, as torch does.
// AVX2 also doubles the arithmetic rate of the many-input loops.
// Include once per translation unit, with SAFE_OPS_LOOPS defined (no include guard).
#include <ATen/Version.h>

#define SAFE_OPS_ISA baseline
#define SAFE_OPS_FUSED 0
#include SAFE_OPS_LOOPS
#undef SAFE_OPS_FUSED
#undef SAFE_OPS_ISA
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define SAFE_OPS_ISA avx2
#define SAFE_OPS_FUSED 1
#include SAFE_OPS_LOOPS
#undef SAFE_OPS_FUSED
#undef SAFE_OPS_ISA
#pragma GCC pop_options
#define SAFE_OPS_HAVE_AVX2_LOOPS 1
#endif

namespace safe_ops {
namespace {

// The AVX2+FMA loops when this CPU has them and torch runs its vectorised (fused) kernels (checked once).
bool use_avx2() {
#ifdef SAFE_OPS_HAVE_AVX2_LOOPS
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && at::get_cpu_capability() != "DEFAULT";
  return supported;
#else
  return false;
#endif
}

}  // namespace
}  // namespace safe_ops
