#include "core/dispatch_stubs.h"

namespace safe_ops {

SAFE_OPS_DEFINE_STUB(linear_combination_stub);
SAFE_OPS_DEFINE_STUB(scale_many_stub);
SAFE_OPS_DEFINE_STUB(dot_many_stub);
#define SAFE_OPS_DEFINE_POINTWISE_STUB(name, formula) SAFE_OPS_DEFINE_STUB(name##_stub);
SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_DEFINE_POINTWISE_STUB)
#undef SAFE_OPS_DEFINE_POINTWISE_STUB
#define SAFE_OPS_DEFINE_FOREACH_STUB(base, formula, nlists) SAFE_OPS_DEFINE_STUB(foreach_##base##_stub);
SAFE_OPS_FOREACH_OPS(SAFE_OPS_DEFINE_FOREACH_STUB)
#undef SAFE_OPS_DEFINE_FOREACH_STUB

}  // namespace safe_ops
