// Whether safe_ops.<op>_ may write into a tensor now: the one owner of that decision. decide() reads what the target
// itself shows (the TensorImpl's and the storage's use counts, the view's base and its counts and creation mode,
// requires_grad/grad_fn, grad mode); decide_write() adds the operands (their roles, the result's shape and dtype,
// an operand that is the target or whose gradient reads it) and the mode (eager or compiled), and is what every
// path acts on: the C fast entries (csrc/python/fast_entry.h), foreach (csrc/python/module.cpp foreach_plain and
// safe_ops/_foreach.py), the Python wrappers' slow path (safe_ops/_inplace.py, through _C._decide_write) and, as
// its traceable image, torch.compile (safe_ops/_inplace.py compiled_decision). The rule table is written once, in
// README.md ("When does `add_` write in place?").
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace safe_ops {

// The decisions, in value order; exported by name as _C.DECISIONS (Python's Decision enum is built from it). New
// ones are appended: the values are public.
#define SAFE_OPS_DECISIONS(_)                                                                                          \
  _(IN_PLACE)                                                                                                          \
  _(COPY_LEAF_REQUIRES_GRAD)  /* grad mode: writing a leaf that requires grad is the leaf error */                     \
  _(COPY_VIEW)                /* a view autograd forbids writing, or whose memory others may hold */                   \
  _(COPY_INTERNAL_OVERLAP)    /* several elements share memory (expanded tensor): torch's error */                     \
  _(COPY_HELD_ELSEWHERE)      /* grad mode: another holder of this TensorImpl, e.g. a node saved it */                 \
  _(COPY_SHARED_STORAGE)      /* a graph tensor whose memory another tensor shares: a saved output */                  \
  _(COPY_INFERENCE)           /* inference tensor outside inference mode */                                            \
  _(COPY_HOOKS_ACTIVE)        /* a graph tensor under saved_tensors_hooks (not the guard's): a hook may hold it */     \
  _(RAISE_SAVED_LEAF_NO_GRAD) /* no_grad write of a Parameter that a pending backward saved */                         \
  _(RAISE_HELD_NO_GRAD)       /* no_grad write of state another holder has, e.g. a pending backward saved */           \
  _(RAISE_INTERNAL_OVERLAP)   /* no_grad write of a Parameter whose elements overlap */                                \
  _(COPY_TRANSFORMED)         /* a torch.func transform's tensor (vmap, grad, jvp) hides its storage */                \
  /* decide_write(): the operands and the mode */                                                                      \
  _(COPY_OPERAND_IS_TARGET)   /* grad mode: the target is also an operand, which the op may save */                    \
  _(COPY_GRAD_READS_TARGET)   /* grad mode: an operand requiring grad whose gradient reads the original target */      \
  _(COPY_RESULT_DOES_NOT_FIT) /* the result's shape is not the target's (broadcasting): a graph tensor, or compiled */ \
  _(RAISE_RESULT_DOES_NOT_FIT_NO_GRAD) /* no_grad state update, the result does not fit: a copy leaves it stale */     \
  _(COPY_COMPILED_GRAPH_TENSOR)        /* compiled, grad mode, the target requires grad: the functional result */      \
  _(RAISE_CAST_ERROR)                  /* torch's error: the result dtype cannot be cast into the target's */          \
  _(RAISE_DTYPE_MISMATCH)              /* torch's error: an operand of another dtype (an op that does not promote) */  \
  _(RAISE_SHAPE_MISMATCH)              /* torch's error: the operands' shapes do not broadcast */

enum class Decision : long {
#define SAFE_OPS_ENUM_ENTRY(name) k##name,
  SAFE_OPS_DECISIONS(SAFE_OPS_ENUM_ENTRY)
#undef SAFE_OPS_ENUM_ENTRY
};

// What the target alone shows (safe_ops.inplace_decision(t)): the first stage of decide_write().
Decision decide(const at::Tensor& t);

// Each parameter's part in the in-place op, as the declarations name it (safe_ops/_declarations.py
// decision_roles): the target 't' (the result has torch's promoted dtype, cast into the target's) or 'f' (an op that
// does not promote, lerp: every operand has the target's dtype, a 0-dim one after the first excepted); then per
// parameter 'o' a tensor operand (joins the shape and the dtype), 'g' the same whose gradient reads the original
// target (lerp's tensor weight: never written while it requires grad in grad mode), 'l' a list of tensor
// operands, 'c' a coefficient tensor (joins the dtype as a 0-dim one, not the shape), 'n' a number operand (joins
// the promotion as a wrapped number), 's' anything else (alpha, value, number weights: not read here).
struct Operand {
  char role = 's';
  const at::Tensor* tensor = nullptr;   // 'o', 'g', 'c'
  at::TensorList list;                  // 'l'
  const c10::Scalar* number = nullptr;  // 'n'
};

enum class Mode {
  kEager,     // the counts are read
  kCompiled,  // torch.compile: counts cannot be read; write when the result fits and the target is not a graph
              // tensor in grad mode (functionalization writes graph inputs back)
};

// The decision every path acts on: IN_PLACE (write), COPY_* (a new tensor; COPY_INTERNAL_OVERLAP is torch's error),
// RAISE_* (an error: the messages are safe_ops/_inplace.py's, the three torch errors write_error_message's). The
// order is the rule's: torch's dtype and shape errors, then the target's own hazards that raise, then the result
// that does not fit, then the target's copies, then an operand that is the target. `target_role` is the target's
// role letter ('t' or 'f'); `operands` the parameters after the target.
Decision decide_write(const at::Tensor& target, char target_role, c10::ArrayRef<Operand> operands, Mode mode);

// torch's message for RAISE_CAST_ERROR, RAISE_DTYPE_MISMATCH and RAISE_SHAPE_MISMATCH (as torch's in-place op and
// torch.broadcast_shapes word them); empty for any other decision.
std::string write_error_message(Decision decision, const at::Tensor& target, c10::ArrayRef<Operand> operands);

// safe_ops.guard's pack hook while the guard's hooks alone are pushed on this thread (nullptr otherwise): set by the
// guard (through the op safe_ops::_set_guard_pack_hook), so that the core never imports the diagnostics tool. Its
// records hold an alias of each saved tensor, so the counts see them: its hooks alone need not force COPY_HOOKS_ACTIVE.
void set_guard_pack_hook(const void* pack_hook);

}  // namespace safe_ops
