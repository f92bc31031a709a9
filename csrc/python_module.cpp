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

// Whether every member of a foreach call is the plain case, decided in one call instead of per member in
// Python: args (tensors, lists, grad_enabled), `lists` a tuple of sequences of the members' operands. Plain: the
// member may be written in place (decide() says IN_PLACE), every operand is a plain tensor of the member's
// dtype and shape and not the member itself, and in grad mode nothing requires grad. False for anything else
// (numbers, subclasses, length mismatches): the Python path then checks and decides per member.
PyObject* foreach_plain(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 3 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])) Py_RETURN_FALSE;
  try {
    PyObject* tensors = args[0];
    PyObject* lists = args[1];
    const bool grad = PyObject_IsTrue(args[2]) == 1;
    const Py_ssize_t n = PyList_GET_SIZE(tensors), nlists = PyTuple_GET_SIZE(lists);
    if (n == 0) Py_RETURN_FALSE;
    for (Py_ssize_t l = 0; l < nlists; ++l) {
      PyObject* list = PyTuple_GET_ITEM(lists, l);
      if (!(PyList_Check(list) || PyTuple_Check(list)) || PySequence_Fast_GET_SIZE(list) != n) Py_RETURN_FALSE;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* member = PyList_GET_ITEM(tensors, i);
      if (!safe_ops::python::is_plain_tensor(member)) Py_RETURN_FALSE;
      const at::Tensor& t = THPVariable_Unpack(member);
      if (safe_ops::decide(t) != safe_ops::Decision::kIN_PLACE || (grad && t.requires_grad())) Py_RETURN_FALSE;
      for (Py_ssize_t l = 0; l < nlists; ++l) {
        PyObject* operand = PySequence_Fast_ITEMS(PyTuple_GET_ITEM(lists, l))[i];
        if (operand == member || !safe_ops::python::is_plain_tensor(operand)) Py_RETURN_FALSE;
        const at::Tensor& o = THPVariable_Unpack(operand);
        if (o.scalar_type() != t.scalar_type() || !o.sizes().equals(t.sizes()) || (grad && o.requires_grad())) {
          Py_RETURN_FALSE;
        }
      }
    }
    Py_RETURN_TRUE;
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
    {"_foreach_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(foreach_plain)), METH_FASTCALL,
     "Whether every member of a foreach call (tensors, lists, grad_enabled) is a plain in-place write."},
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
