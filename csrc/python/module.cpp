// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries the in-place decision (csrc/core/inplace_decision.h) for the Python side, called on the borrowed Python
// tensors so that reference counts are exactly what autograd and other tensors hold, with no argument-passing
// copies in between, and the fast entry points generated from safe_ops/_declarations.py (csrc/python/fast_entry.h).
#include <Python.h>

#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include <c10/util/SmallVector.h>

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

// A number operand's category for the promotion (the value is not read): bool, int, float or complex.
bool number_of(PyObject* obj, c10::Scalar& number) {
  if (PyBool_Check(obj)) {
    number = c10::Scalar(false);
  } else if (PyComplex_Check(obj)) {
    number = c10::Scalar(c10::complex<double>(0, 0));
  } else if (PyFloat_Check(obj)) {
    number = c10::Scalar(0.0);
  } else if (PyLong_Check(obj) || PyIndex_Check(obj)) {
    number = c10::Scalar(int64_t{0});
  } else if (PyNumber_Check(obj)) {
    number = c10::Scalar(0.0);
  } else {
    return false;
  }
  return true;
}

// The operands of a Python call by their roles (csrc/core/inplace_decision.h Operand): `items` the parameters after
// the target, `roles` their role letters. The tensors are borrowed from the Python objects, which the caller holds.
struct PyOperands {
  c10::SmallVector<safe_ops::Operand, 4> operands;
  c10::SmallVector<c10::SmallVector<at::Tensor, 4>, 2> lists;
  c10::SmallVector<c10::Scalar, 2> numbers;

  // false with a TypeError set where an argument does not have its role's type.
  bool parse(PyObject* const* items, Py_ssize_t n, const char* roles) {
    lists.reserve(n);
    numbers.reserve(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
      safe_ops::Operand o;
      o.role = roles[i];
      PyObject* item = items[i];
      if (o.role == 'o' || o.role == 'g' || o.role == 'c') {
        if (!THPVariable_Check(item)) return type_error(i, "a tensor");
        o.tensor = &THPVariable_Unpack(item);
      } else if (o.role == 'l') {
        if (!PyList_Check(item) && !PyTuple_Check(item)) return type_error(i, "a list of tensors");
        auto& list = lists.emplace_back();
        for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(item); ++k) {
          PyObject* member = PySequence_Fast_ITEMS(item)[k];
          if (!THPVariable_Check(member)) return type_error(i, "a list of tensors");
          list.push_back(THPVariable_Unpack(member));
        }
        o.list = list;
      } else if (o.role == 'n') {
        if (!number_of(item, numbers.emplace_back())) return type_error(i, "a number");
        o.number = &numbers.back();
      } else if (o.role != 's') {
        PyErr_Format(PyExc_ValueError, "unknown operand role '%c'", o.role);
        return false;
      }
      operands.push_back(o);
    }
    return true;
  }

  static bool type_error(Py_ssize_t i, const char* what) {
    PyErr_Format(PyExc_TypeError, "safe_ops: in-place operand %zd must be %s", i + 1, what);
    return false;
  }
};

// _decide_write(target, operands, roles, compiled): decide_write() for a Python call, its Decision's value.
// `operands` a tuple of the parameters after the target, `roles` the in-place roles (the target's letter first,
// safe_ops/_declarations.py decision_roles), `compiled` true for the compiled mode (what safe_ops/_inplace.py
// compiled_decision traces). torch's own errors (RAISE_CAST_ERROR, RAISE_DTYPE_MISMATCH, RAISE_SHAPE_MISMATCH)
// are raised here as the RuntimeError torch raises; every other decision is the caller's to act on.
PyObject* decide_write(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4 || !THPVariable_Check(args[0]) || !PyTuple_Check(args[1]) || !PyUnicode_Check(args[2])) {
    PyErr_SetString(PyExc_TypeError, "_decide_write(target, operands: tuple, roles: str, compiled: bool)");
    return nullptr;
  }
  try {
    const char* roles = PyUnicode_AsUTF8(args[2]);
    if (roles == nullptr) return nullptr;
    const Py_ssize_t n = PyTuple_GET_SIZE(args[1]);
    if (static_cast<Py_ssize_t>(std::strlen(roles)) != n + 1) {
      PyErr_SetString(PyExc_ValueError, "_decide_write: one role per operand, the target's first");
      return nullptr;
    }
    PyOperands parsed;
    if (!parsed.parse(PySequence_Fast_ITEMS(args[1]), n, roles + 1)) return nullptr;
    const at::Tensor& target = THPVariable_Unpack(args[0]);
    const auto mode = PyObject_IsTrue(args[3]) == 1 ? safe_ops::Mode::kCompiled : safe_ops::Mode::kEager;
    const safe_ops::Decision d = safe_ops::decide_write(target, roles[0], parsed.operands, mode);
    if (d == safe_ops::Decision::kRAISE_CAST_ERROR || d == safe_ops::Decision::kRAISE_DTYPE_MISMATCH ||
        d == safe_ops::Decision::kRAISE_SHAPE_MISMATCH) {
      PyErr_SetString(PyExc_RuntimeError, safe_ops::write_error_message(d, target, parsed.operands).c_str());
      return nullptr;
    }
    return PyLong_FromLong(static_cast<long>(d));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// Whether every member of a foreach call can take the fused kernel at once, decided in one call instead of per
// member in Python: args (tensors, lists, grad_enabled), `lists` a tuple of sequences of the members' operands.
// args (tensors, lists, grad_enabled, roles): `roles` the member's and its operands' as the declarations give them
// (ForeachOp.decision_roles). Per member: decide_write() says IN_PLACE, and what the fused kernel needs of a call it
// takes without the Python checks: plain tensors, operands of the member's dtype and shape, in grad mode nothing that
// requires grad (the kernel records no autograd), no forward-mode tangent. False for anything else (numbers,
// subclasses, length mismatches): the Python path then checks and decides per member.
PyObject* foreach_plain(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4 || !PyUnicode_Check(args[3])) {
    PyErr_SetString(PyExc_TypeError, "_foreach_plain(tensors, lists, grad_enabled, roles: str)");
    return nullptr;
  }
  if (!PyList_Check(args[0]) || !PyTuple_Check(args[1])) Py_RETURN_FALSE;  // the Python path checks them
  try {
    PyObject* tensors = args[0];
    PyObject* lists = args[1];
    const bool grad = PyObject_IsTrue(args[2]) == 1;
    const Py_ssize_t n = PyList_GET_SIZE(tensors), nlists = PyTuple_GET_SIZE(lists);
    Py_ssize_t nroles = 0;
    const char* roles = PyUnicode_AsUTF8AndSize(args[3], &nroles);
    if (roles == nullptr) return nullptr;
    if (nroles != nlists + 1) {
      PyErr_SetString(PyExc_ValueError, "_foreach_plain: one role per operand list, the member's first");
      return nullptr;
    }
    if (n == 0) Py_RETURN_FALSE;
    for (Py_ssize_t l = 0; l < nlists; ++l) {
      PyObject* list = PyTuple_GET_ITEM(lists, l);
      if (!(PyList_Check(list) || PyTuple_Check(list)) || PySequence_Fast_GET_SIZE(list) != n) Py_RETURN_FALSE;
    }
    c10::SmallVector<safe_ops::Operand, 4> operands(nlists);
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* member = PyList_GET_ITEM(tensors, i);
      if (!safe_ops::python::is_plain_tensor(member)) Py_RETURN_FALSE;
      const at::Tensor& t = THPVariable_Unpack(member);
      if ((grad && t.requires_grad()) || safe_ops::autograd::has_tangent(t)) Py_RETURN_FALSE;
      for (Py_ssize_t l = 0; l < nlists; ++l) {
        PyObject* operand = PySequence_Fast_ITEMS(PyTuple_GET_ITEM(lists, l))[i];
        if (!safe_ops::python::is_plain_tensor(operand)) Py_RETURN_FALSE;
        const at::Tensor& o = THPVariable_Unpack(operand);
        if (o.scalar_type() != t.scalar_type() || !o.sizes().equals(t.sizes()) || (grad && o.requires_grad()) ||
            safe_ops::autograd::has_tangent(o)) {
          Py_RETURN_FALSE;
        }
        operands[l].role = roles[1 + l];
        operands[l].tensor = &o;
      }
      if (safe_ops::decide_write(t, roles[0], operands, safe_ops::Mode::kEager) != safe_ops::Decision::kIN_PLACE) {
        Py_RETURN_FALSE;
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
    {"_decide_write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(decide_write)), METH_FASTCALL,
     "The in-place decision for a call (target, operands, roles, compiled): Decision's value."},
    {"_foreach_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(foreach_plain)), METH_FASTCALL,
     "Whether every member of a foreach call (tensors, lists, grad_enabled, roles) is a plain in-place write."},
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
