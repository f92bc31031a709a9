// Compiles the loop header named by SAFE_OPS_LOOPS three times: for baseline x86-64, and under
// `#pragma GCC target("avx2,fma")` and the AVX512 target with `a + b*c` contracted to one fused multiply-add, in
// namespaces safe_ops::baseline, ::avx2 and ::avx512 (the header uses SAFE_OPS_ISA as its namespace), and defines
// safe_ops::cpu_isa() and SAFE_OPS_PICK, which pick one at run time. The module is built for baseline x86-64 so it
// loads on any CPU. The choice follows torch's own CPU capability: where torch runs its AVX2/AVX512 kernels, which fuse
// a + alpha*b, addcmul and lerp into FMAs, so do these loops (the same bits as torch); where torch runs its
// DEFAULT kernels (no FMA, or ATEN_CPU_CAPABILITY=default), the baseline loops round every product, as torch does.
// AVX2 also doubles the arithmetic rate of the many-input loops.
// Include once per translation unit, with SAFE_OPS_LOOPS defined (no include guard).
#include <ATen/Version.h>

#include <string>

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
// The same loops at torch's AVX512 width: for cache-resident operands (a 4K-64K add) the arithmetic rate is
// what separates a loop from torch's; the bits are the AVX2 loops' (the same fused operations, elementwise).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")
#pragma GCC optimize("fp-contract=fast")
#define SAFE_OPS_ISA avx512
#define SAFE_OPS_FUSED 1
#include SAFE_OPS_LOOPS
#undef SAFE_OPS_FUSED
#undef SAFE_OPS_ISA
#pragma GCC pop_options
#define SAFE_OPS_HAVE_X86_LOOPS 1
#endif

namespace safe_ops {
namespace {

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The loops torch's own CPU capability calls for (checked once): AVX512 or AVX2 (both fuse a + b*c, as torch's
// vectorised kernels do) where this CPU has them and torch runs those kernels, else the baseline loops.
Isa cpu_isa() {
#ifdef SAFE_OPS_HAVE_X86_LOOPS
  static const Isa isa = [] {
    const std::string capability = at::get_cpu_capability();
    if (capability == "DEFAULT" || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
      return Isa::kBaseline;
    }
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return capability == "AVX512" && avx512 ? Isa::kAvx512 : Isa::kAvx2;
  }();
  return isa;
#else
  return Isa::kBaseline;
#endif
}

}  // namespace
}  // namespace safe_ops

// The ISA copy of a loop template for this CPU: SAFE_OPS_PICK(accumulate_block<scalar_t>).
#ifdef SAFE_OPS_HAVE_X86_LOOPS
#define SAFE_OPS_PICK(...)                         \
  (cpu_isa() == Isa::kAvx512 ? avx512::__VA_ARGS__ \
                             : (cpu_isa() == Isa::kAvx2 ? avx2::__VA_ARGS__ : baseline::__VA_ARGS__))
#else
#define SAFE_OPS_PICK(...) (baseline::__VA_ARGS__)
#endif
