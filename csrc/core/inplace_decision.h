// Whether safe_ops.<op>_ may write into a tensor now, decided from what C++ can see: the TensorImpl's and the
// storage's use counts, the view's base and its counts and creation mode, requires_grad/grad_fn, grad mode.
// The rule table is written once, in README.md ("When does `add_` write in place?").
#pragma once

#include <ATen/core/Tensor.h>

namespace safe_ops {

// The decisions, in value order; exported by name as _C.DECISIONS (Python's Decision enum is built from it).
#define SAFE_OPS_DECISIONS(_)                                                                                \
  _(IN_PLACE)                                                                                                \
  _(COPY_LEAF_REQUIRES_GRAD)  /* grad mode: writing a leaf that requires grad is the leaf error */           \
  _(COPY_VIEW)                /* a view autograd forbids writing, or whose memory others may hold */         \
  _(COPY_INTERNAL_OVERLAP)    /* several elements share memory (expanded tensor) */                          \
  _(COPY_HELD_ELSEWHERE)      /* grad mode: another holder of this TensorImpl, e.g. a node saved it */       \
  _(COPY_SHARED_STORAGE)      /* a graph tensor whose memory another tensor shares: a saved output */        \
  _(COPY_INFERENCE)           /* inference tensor outside inference mode */                                  \
  _(COPY_HOOKS_ACTIVE)        /* a graph tensor under saved_tensors_hooks: a hook may hold it unseen */      \
  _(RAISE_SAVED_LEAF_NO_GRAD) /* no_grad write of a Parameter that a pending backward saved */               \
  _(RAISE_HELD_NO_GRAD)       /* no_grad write of state another holder has, e.g. a pending backward saved */ \
  _(RAISE_INTERNAL_OVERLAP)   /* no_grad write of a Parameter whose elements overlap */                      \
  _(COPY_TRANSFORMED)         /* a torch.func transform's tensor (vmap, grad, jvp) hides its storage */

enum class Decision : long {
#define SAFE_OPS_ENUM_ENTRY(name) k##name,
  SAFE_OPS_DECISIONS(SAFE_OPS_ENUM_ENTRY)
#undef SAFE_OPS_ENUM_ENTRY
};

Decision decide(const at::Tensor& t);

}  // namespace safe_ops
