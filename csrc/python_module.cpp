// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries the in-place safety decision, written against the borrowed Python tensor so that reference counts
// are exactly what autograd and other tensors hold, with no argument-passing copies in between.
#include <Python.h>

#include <ATen/MemoryOverlap.h>
#include <ATen/SavedTensorHooks.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

namespace {

// Keep in sync with safe_ops/_inplace.py (Decision).
enum Decision : long {
  kInPlace = 0,
  kCopyLeafRequiresGrad = 1,   // grad mode: writing a leaf that requires grad is the leaf error
  kCopyView = 2,               // a view: its base (or autograd's view rules) may forbid the write or see it
  kCopyInternalOverlap = 3,    // several elements share memory (expanded tensor)
  kCopyHeldElsewhere = 4,      // another holder of this TensorImpl: an autograd node saved it as an input
  kCopySharedStorage = 5,      // another tensor shares the memory: a saved output, a view, `.data`
  kCopyInference = 6,          // inference tensor outside inference mode: torch forbids the write
  kCopyHooksActive = 7,        // saved_tensors_hooks active: a hook may hold the tensor where counts can't see
  kRaiseSavedLeafNoGrad = 8,   // no_grad write of a leaf (Parameter) that a pending backward saved
};

Decision decide(const at::Tensor& t) {
  if (t.is_inference() && !c10::InferenceMode::is_enabled()) return kCopyInference;
  const bool grad_mode = c10::GradMode::is_enabled();
  const bool leaf_requires_grad = t.requires_grad() && t.is_leaf();
  // A leaf in a live graph is also held by its AccumulateGrad node, which never reads the value.
  const long expected_uses =
      1 + ((leaf_requires_grad && torch::autograd::impl::try_get_grad_accumulator(t)) ? 1 : 0);
  const bool held_elsewhere = static_cast<long>(t.use_count()) > expected_uses;
  const bool shared_storage = t.unsafeGetTensorImpl()->storage().use_count() > 1;
  const bool overlap = at::has_internal_overlap(t) == at::MemOverlap::Yes;
  if (!grad_mode && leaf_requires_grad) {
    // torch lets no_grad code update Parameters in place; a copy would never reach the module that owns the
    // Parameter, so the only safe choices are the write or an error.
    return (held_elsewhere || shared_storage || t.is_view() || overlap) ? kRaiseSavedLeafNoGrad : kInPlace;
  }
  if (leaf_requires_grad) return kCopyLeafRequiresGrad;
  if (t.is_view()) return kCopyView;
  if (overlap) return kCopyInternalOverlap;
  if (grad_mode && at::SavedTensorDefaultHooks::get_hooks().has_value()) return kCopyHooksActive;
  if (held_elsewhere) return kCopyHeldElsewhere;
  if (shared_storage) return kCopySharedStorage;
  return kInPlace;
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

PyMethodDef methods[] = {
    {"_inplace_decision", inplace_decision, METH_O,
     "In-place safety decision for a tensor (see safe_ops/_inplace.py)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "safe_ops._C", "safe_ops native ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (PyModule_AddStringConstant(module, "BUILT_FOR_TORCH", TORCH_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
