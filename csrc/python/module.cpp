// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries the in-place safety decision, written against the borrowed Python tensor so that reference counts are
// exactly what autograd and other tensors hold, with no argument-passing copies in between, and the fast entry
// points generated from safe_ops/_declarations.py (csrc/python/fast_entry.h).
#include <Python.h>

#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/autograd/python_variable.h>

#include <iterator>
#include <string>
#include <vector>

#include "autograd/common.h"
#include "core/inplace_decision.h"
#include "python/fast_entry.h"

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
// (numbers, subclasses, length mismatches, forward-mode tangents): the Python path then checks and decides per
// member.
// Whether any of the tensors among the arguments carries a forward-mode tangent (the fused foreach kernel computes
// none: such members take the per-tensor op).
PyObject* any_tangent(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  try {
    for (Py_ssize_t i = 0; i < nargs; ++i) {
      if (THPVariable_Check(args[i]) && safe_ops::autograd::has_tangent(THPVariable_Unpack(args[i]))) Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

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
      if (safe_ops::decide(t) != safe_ops::Decision::kIN_PLACE || (grad && t.requires_grad()) ||
          safe_ops::autograd::has_tangent(t)) {
        Py_RETURN_FALSE;
      }
      for (Py_ssize_t l = 0; l < nlists; ++l) {
        PyObject* operand = PySequence_Fast_ITEMS(PyTuple_GET_ITEM(lists, l))[i];
        if (operand == member || !safe_ops::python::is_plain_tensor(operand)) Py_RETURN_FALSE;
        const at::Tensor& o = THPVariable_Unpack(operand);
        if (o.scalar_type() != t.scalar_type() || !o.sizes().equals(t.sizes()) || (grad && o.requires_grad()) ||
            safe_ops::autograd::has_tangent(o)) {
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

// A public functional op as a builtin (safe_ops.add): the common call goes from Python straight to the op's C fast
// entries, with no Python frame in between (~0.15 us of a 1.4 us call on a small tensor); anything else (out=, a
// keyword it does not know, a declined entry) calls the Python wrapper with the same arguments. Under
// torch.compile dynamo traces the Python wrapper instead (torch.compiler.substitute_in_graph, _wrappers.py).
struct Front {
  std::string name, doc;
  PyMethodDef def{};
  std::vector<PyObject*> params;    // parameter names, in order (owned)
  std::vector<PyObject*> defaults;  // per parameter, nullptr if required (owned)
  Py_ssize_t npositional = 0;       // parameters before the keyword-only ones
  std::vector<PyObject*> entries;   // the overloads' fast entries, tried in order (owned)
  PyObject* fallback = nullptr;     // the Python wrapper (owned)
  PyObject* out_name = nullptr;     // "out" (owned)
};

bool same_name(PyObject* a, PyObject* b) { return a == b || PyUnicode_Compare(a, b) == 0; }

PyObject* front_call(PyObject* capsule, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* f = static_cast<Front*>(PyCapsule_GetPointer(capsule, "safe_ops.front"));
  if (f == nullptr) return nullptr;
  constexpr size_t kMax = 8;
  const size_t n = f->params.size();
  PyObject* full[kMax] = {};
  bool plain = n <= kMax && nargs <= f->npositional;
  for (Py_ssize_t i = 0; plain && i < nargs; ++i) full[i] = args[i];
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; plain && k < nkw; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    PyObject* value = args[nargs + k];
    if (same_name(key, f->out_name)) {
      plain = value == Py_None;
      continue;
    }
    size_t j = 0;
    while (j < n && !same_name(key, f->params[j])) ++j;
    plain = j < n && full[j] == nullptr;
    if (plain) full[j] = value;
  }
  for (size_t j = 0; plain && j < n; ++j) {
    if (full[j] == nullptr) full[j] = f->defaults[j];
    plain = full[j] != nullptr;
  }
  if (plain) {
    for (PyObject* entry : f->entries) {
      PyObject* result = PyObject_Vectorcall(entry, full, n, nullptr);
      if (result != Py_NotImplemented) return result;  // the op's result, or nullptr with its error set
      Py_DECREF(result);
    }
  }
  return PyObject_Vectorcall(f->fallback, args, nargs, kwnames);
}

// _make_front(name, doc, params, npositional, defaults, entries, fallback): defaults a tuple with one entry per
// parameter (a default, or a unique marker for required ones: the `required` argument's identity).
PyObject* make_front(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 8) {
    PyErr_SetString(PyExc_TypeError, "_make_front takes 8 arguments");
    return nullptr;
  }
  auto* f = new Front();  // lives as long as the process: the builtin points at its PyMethodDef
  f->name = PyUnicode_AsUTF8(args[0]);
  f->doc = PyUnicode_AsUTF8(args[1]);
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[2]); ++i) {
    PyObject* p = PyTuple_GET_ITEM(args[2], i);
    Py_INCREF(p);
    f->params.push_back(p);
    PyObject* d = PyTuple_GET_ITEM(args[4], i);
    if (d == args[7]) {
      f->defaults.push_back(nullptr);
    } else {
      Py_INCREF(d);
      f->defaults.push_back(d);
    }
  }
  f->npositional = PyLong_AsSsize_t(args[3]);
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[5]); ++i) {
    PyObject* e = PyTuple_GET_ITEM(args[5], i);
    Py_INCREF(e);
    f->entries.push_back(e);
  }
  Py_INCREF(args[6]);
  f->fallback = args[6];
  f->out_name = PyUnicode_InternFromString("out");
  f->def.ml_name = f->name.c_str();
  f->def.ml_meth = reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(front_call));
  f->def.ml_flags = METH_FASTCALL | METH_KEYWORDS;
  f->def.ml_doc = f->doc.c_str();
  PyObject* capsule = PyCapsule_New(f, "safe_ops.front", nullptr);
  if (capsule == nullptr) return nullptr;
  PyObject* module_name = PyUnicode_FromString("safe_ops");
  PyObject* fn = PyCFunction_NewEx(&f->def, capsule, module_name);
  Py_DECREF(capsule);
  Py_XDECREF(module_name);
  return fn;
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
    {"_make_front", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(make_front)), METH_FASTCALL,
     "A functional op as a builtin calling its fast entries, else its Python wrapper."},
    {"_foreach_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(foreach_plain)), METH_FASTCALL,
     "Whether every member of a foreach call (tensors, lists, grad_enabled) is a plain in-place write."},
    {"_any_tangent", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(any_tangent)), METH_FASTCALL,
     "Whether any tensor argument carries a forward-mode tangent."},
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
