// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries the in-place safety decision, written against the borrowed Python tensor so that reference counts are
// exactly what autograd and other tensors hold, with no argument-passing copies in between, and the fast entry
// points generated from safe_ops/_declarations.py (csrc/python_entry.h).
#include <Python.h>

#include <ATen/MemoryOverlap.h>
#include <ATen/SavedTensorHooks.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <iterator>

#include "python_entry.h"

namespace {

// The in-place decisions, in value order; exported by name as _C.DECISIONS (Python's Decision enum is built
// from it). The rule table is README.md's "When does `add_` write in place?".
#define SAFE_OPS_DECISIONS(_)                                                                      \
  _(IN_PLACE)                                                                                      \
  _(COPY_LEAF_REQUIRES_GRAD)  /* grad mode: writing a leaf that requires grad is the leaf error */ \
  _(COPY_VIEW)                /* its base (or autograd's view rules) may forbid the write */       \
  _(COPY_INTERNAL_OVERLAP)    /* several elements share memory (expanded tensor) */                \
  _(COPY_HELD_ELSEWHERE)      /* another holder of this TensorImpl: a node saved it */             \
  _(COPY_SHARED_STORAGE)      /* another tensor shares the memory: a saved output, .data */        \
  _(COPY_INFERENCE)           /* inference tensor outside inference mode */                        \
  _(COPY_HOOKS_ACTIVE)        /* saved_tensors_hooks: a hook may hold it where counts can't see */ \
  _(RAISE_SAVED_LEAF_NO_GRAD) /* no_grad write of a Parameter that a pending backward saved */

enum Decision : long {
#define SAFE_OPS_ENUM_ENTRY(name) k##name,
  SAFE_OPS_DECISIONS(SAFE_OPS_ENUM_ENTRY)
#undef SAFE_OPS_ENUM_ENTRY
};

Decision decide(const at::Tensor& t) {
  if (t.is_inference() && !c10::InferenceMode::is_enabled()) return kCOPY_INFERENCE;
  const bool grad_mode = c10::GradMode::is_enabled();
  const bool leaf_requires_grad = t.requires_grad() && t.is_leaf();
  // A leaf in a live graph is also held by its AccumulateGrad node, which never reads the value.
  const long expected_uses = 1 + ((leaf_requires_grad && torch::autograd::impl::try_get_grad_accumulator(t)) ? 1 : 0);
  const bool held_elsewhere = static_cast<long>(t.use_count()) > expected_uses;
  const bool shared_storage = t.unsafeGetTensorImpl()->storage().use_count() > 1;
  const bool overlap = at::has_internal_overlap(t) == at::MemOverlap::Yes;
  if (!grad_mode && leaf_requires_grad) {
    // torch lets no_grad code update Parameters in place; a copy would never reach the module that owns the
    // Parameter, so the only safe choices are the write or an error.
    return (held_elsewhere || shared_storage || t.is_view() || overlap) ? kRAISE_SAVED_LEAF_NO_GRAD : kIN_PLACE;
  }
  if (leaf_requires_grad) return kCOPY_LEAF_REQUIRES_GRAD;
  if (t.is_view()) return kCOPY_VIEW;
  if (overlap) return kCOPY_INTERNAL_OVERLAP;
  if (held_elsewhere) return kCOPY_HELD_ELSEWHERE;
  if (shared_storage) return kCOPY_SHARED_STORAGE;
  // Last, so that it is reported only when nothing else forbids the write (safe_ops.guard's own hooks keep
  // what they save visible to the counts above, and the Python side may then allow the write).
  if (grad_mode && at::SavedTensorDefaultHooks::get_hooks().has_value()) return kCOPY_HOOKS_ACTIVE;
  return kIN_PLACE;
}

PyObject* inplace_decision(PyObject* /*module*/, PyObject* arg) {
  if (!THPVariable_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "expected a torch.Tensor");
    return nullptr;
  }
  try {
    return PyLong_FromLong(decide(THPVariable_Unpack(arg)));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// ("IN_PLACE", ...), indexed by Decision.
PyObject* decision_names() {
#define SAFE_OPS_NAME(name) #name,
  static const char* const names[] = {SAFE_OPS_DECISIONS(SAFE_OPS_NAME)};
#undef SAFE_OPS_NAME
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(std::size(names)));
  for (size_t i = 0; tuple != nullptr && i < std::size(names); ++i) {
    PyObject* name = PyUnicode_FromString(names[i]);
    if (name == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), name);
  }
  return tuple;
}

PyMethodDef methods[] = {
    {"_inplace_decision", inplace_decision, METH_O, "In-place safety decision for a tensor (Decision's value)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "safe_ops._C", "safe_ops native ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  PyObject* decisions = decision_names();
  // PyModule_AddObject steals the reference only on success.
  if (decisions == nullptr || PyModule_AddObject(module, "DECISIONS", decisions) < 0) {
    Py_XDECREF(decisions);
    Py_DECREF(module);
    return nullptr;
  }
  if (PyModule_AddFunctions(module, safe_ops::python::fast_entries) < 0 ||
      PyModule_AddStringConstant(module, "BUILT_FOR_TORCH", TORCH_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
