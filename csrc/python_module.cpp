// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries the in-place safety decision, written against the borrowed Python tensor so that reference counts are
// exactly what autograd and other tensors hold, with no argument-passing copies in between, and the fast entry
// points generated from safe_ops/_declarations.py (csrc/python_entry.h).
#include <Python.h>

#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/autograd/python_variable.h>

#include <iterator>

#include "inplace_decision.h"
#include "python_entry.h"

namespace {

PyObject* inplace_decision(PyObject* /*module*/, PyObject* arg) {
  if (!THPVariable_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "expected a torch.Tensor");
    return nullptr;
  }
  try {
    return PyLong_FromLong(static_cast<long>(safe_ops::decide(THPVariable_Unpack(arg))));
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
