// Compiles the loop header named by SAFE_OPS_LOOPS twice: for baseline x86-64 and under
// `#pragma GCC target("avx2")`, in namespaces safe_ops::baseline and safe_ops::avx2 (the header uses SAFE_OPS_ISA
// as its namespace), and defines safe_ops::use_avx2(), which picks one at run time from the CPU's features. The
// module is built for baseline x86-64 so it loads on any CPU; AVX2 doubles the arithmetic rate of the many-input
// loops, which on a 2-core machine bound them before memory bandwidth did.
// Include once per translation unit, with SAFE_OPS_LOOPS defined (no include guard).
#define SAFE_OPS_ISA baseline
#include SAFE_OPS_LOOPS
#undef SAFE_OPS_ISA
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC push_options
#pragma GCC target("avx2")
#define SAFE_OPS_ISA avx2
#include SAFE_OPS_LOOPS
#undef SAFE_OPS_ISA
#pragma GCC pop_options
#define SAFE_OPS_HAVE_AVX2_LOOPS 1
#endif

namespace safe_ops {
namespace {

// The AVX2 loops when this CPU has AVX2 (checked once).
bool use_avx2() {
#ifdef SAFE_OPS_HAVE_AVX2_LOOPS
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
#else
  return false;
#endif
}

}  // namespace
}  // namespace safe_ops
