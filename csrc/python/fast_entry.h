// Fast entry points for the Python wrappers (safe_ops/_wrappers.py): each parses its known signature straight
// from the Python objects and calls the op through the dispatcher (autograd, device kernels and dispatch modes
// apply as usual). torch.ops' generic schema-driven argument parsing costs about as much as a whole tiny add;
// these skip it. They return NotImplemented for anything unusual (tensor subclasses, torch-function modes,
// non-number scalars) and the wrapper then takes the torch.ops path, which handles everything.
// The entries themselves are generated from safe_ops/_declarations.py (csrc/codegen/generate.py).
#pragma once

#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include "core/inplace_decision.h"

#include <array>
#include <optional>
#include <type_traits>
#include <tuple>
#include <utility>
#include <vector>

namespace safe_ops::python {

// Plain tensors and Parameters only: other subclasses may override __torch_function__.
inline bool is_plain_tensor(PyObject* obj) {
  if (THPVariable_CheckExact(obj)) return true;
  static PyObject* parameter_type = [] {
    PyObject* module = PyImport_ImportModule("torch.nn.parameter");
    PyObject* type = module ? PyObject_GetAttrString(module, "Parameter") : nullptr;
    Py_XDECREF(module);
    PyErr_Clear();
    return type;  // kept for the process's lifetime
  }();
  return parameter_type != nullptr && reinterpret_cast<PyObject*>(Py_TYPE(obj)) == parameter_type;
}

// Parsers from a borrowed PyObject to one op parameter; false = not a plain case, take the torch.ops path.
template <typename T>
struct Arg;

template <>
struct Arg<const at::Tensor&> {
  const at::Tensor* tensor = nullptr;
  bool parse(PyObject* obj) {
    if (!is_plain_tensor(obj)) return false;
    tensor = &THPVariable_Unpack(obj);
    return true;
  }
  const at::Tensor& get() const { return *tensor; }
};

template <>
struct Arg<at::Tensor&> {
  at::Tensor* tensor = nullptr;
  bool parse(PyObject* obj) {
    if (!is_plain_tensor(obj)) return false;
    tensor = const_cast<at::Tensor*>(&THPVariable_Unpack(obj));
    return true;
  }
  at::Tensor& get() const { return *tensor; }
};

template <>
struct Arg<const c10::Scalar&> {
  c10::Scalar value;
  bool parse(PyObject* obj) {
    if (PyBool_Check(obj)) {
      value = c10::Scalar(obj == Py_True);
    } else if (PyLong_CheckExact(obj)) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
      if (overflow != 0) return false;
      value = c10::Scalar(static_cast<int64_t>(v));
    } else if (PyFloat_CheckExact(obj)) {
      value = c10::Scalar(PyFloat_AS_DOUBLE(obj));
    } else {
      return false;
    }
    return true;
  }
  const c10::Scalar& get() const { return value; }
};

template <>
struct Arg<at::TensorList> {
  c10::SmallVector<at::Tensor, 8> tensors;  // no heap allocation for short lists (accumulate's K)
  bool parse(PyObject* obj) {
    if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
    PyObject** items = PySequence_Fast_ITEMS(obj);
    tensors.reserve(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (!is_plain_tensor(items[i])) return false;
      tensors.push_back(THPVariable_Unpack(items[i]));
    }
    return true;
  }
  at::TensorList get() const { return tensors; }
};

template <>
struct Arg<std::optional<at::ArrayRef<double>>> {
  std::optional<c10::SmallVector<double, 8>> values;
  bool parse(PyObject* obj) {
    if (obj == Py_None) return true;
    if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
    PyObject** items = PySequence_Fast_ITEMS(obj);
    values.emplace();
    values->reserve(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (!PyFloat_CheckExact(items[i]) && !PyLong_CheckExact(items[i])) return false;
      values->push_back(PyFloat_AsDouble(items[i]));
    }
    return !PyErr_Occurred();
  }
  std::optional<at::ArrayRef<double>> get() const {
    if (!values) return std::nullopt;
    return at::ArrayRef<double>(*values);
  }
};

template <>
struct Arg<at::ArrayRef<double>> {
  Arg<std::optional<at::ArrayRef<double>>> inner;
  bool parse(PyObject* obj) { return obj != Py_None && inner.parse(obj); }
  at::ArrayRef<double> get() const { return *inner.get(); }
};

template <>
struct Arg<const std::optional<at::Tensor>&> {
  std::optional<at::Tensor> tensor;
  bool parse(PyObject* obj) {
    if (obj == Py_None) return true;
    if (!is_plain_tensor(obj)) return false;
    tensor = THPVariable_Unpack(obj);
    return true;
  }
  const std::optional<at::Tensor>& get() const { return tensor; }
};

struct ReleaseGil {
  ReleaseGil() : state(PyEval_SaveThread()) {}
  ~ReleaseGil() { PyEval_RestoreThread(state); }
  PyThreadState* state;
};

// A C++ reference to each tensor argument, taken while the GIL is held. A Python tensor's first C++ reference
// increments its PyObject (torch keeps the object alive while C++ holds the tensor), which needs the GIL: taken
// inside the op, with the GIL released, each operand copy would acquire it and the last release acquire it again,
// ~0.5 us of an addcmul on a small tensor. Pinned here, the copies inside the op are plain count changes. Destroyed
// after the GIL is back.
using Pins = c10::SmallVector<at::Tensor, 4>;
template <typename P>
void pin(const Arg<P>& arg, Pins& pins) {
  if constexpr (std::is_same_v<P, const at::Tensor&> || std::is_same_v<P, at::Tensor&>) pins.push_back(arg.get());
}

inline PyObject* not_implemented() {
  Py_INCREF(Py_NotImplemented);
  return Py_NotImplemented;
}

// A tensor autograd has nothing to do with: no autograd metadata (so no requires_grad, no tangent, not a view
// autograd tracks). When every tensor argument of a functional call is one, the Autograd kernel would record
// nothing: the call goes below it directly, one dispatch instead of two (~0.1 us of a small add).
inline bool autograd_free(const at::Tensor& t) { return torch::autograd::impl::get_autograd_meta(t) == nullptr; }

template <typename P>
bool autograd_free_arg(const Arg<P>& arg) {
  if constexpr (std::is_same_v<P, const at::Tensor&>) {
    return autograd_free(arg.get());
  } else if constexpr (std::is_same_v<P, at::TensorList>) {
    for (const auto& t : arg.get()) {
      if (!autograd_free(t)) return false;
    }
    return true;
  } else if constexpr (std::is_same_v<P, const std::optional<at::Tensor>&>) {
    return !arg.get().has_value() || autograd_free(*arg.get());
  } else {
    return true;
  }
}

template <typename Ret, typename... Params, size_t... I>
PyObject* call_parsed(const c10::TypedOperatorHandle<Ret(Params...)>& op, PyObject* const* args,
                      std::index_sequence<I...>) {
  std::tuple<Arg<Params>...> parsed;
  if (!(std::get<I>(parsed).parse(args[I]) && ...)) return not_implemented();
  Pins pins;
  (pin(std::get<I>(parsed), pins), ...);
  if constexpr (std::is_void_v<Ret>) {
    {
      ReleaseGil no_gil;
      op.call(std::get<I>(parsed).get()...);
    }
    Py_RETURN_NONE;
  } else {
    at::Tensor result;
    const bool below_autograd = (autograd_free_arg(std::get<I>(parsed)) && ...);
    {
      ReleaseGil no_gil;
      if (below_autograd) {
        at::AutoDispatchBelowADInplaceOrView guard;
        result = op.call(std::get<I>(parsed).get()...);
      } else {
        result = op.call(std::get<I>(parsed).get()...);
      }
    }
    return THPVariable_Wrap(std::move(result));
  }
}

template <typename Ret, typename... Params>
PyObject* call_fast(const c10::TypedOperatorHandle<Ret(Params...)>& op, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != static_cast<Py_ssize_t>(sizeof...(Params)) || at::impl::torch_function_mode_enabled()) {
    return not_implemented();
  }
  return call_parsed(op, args, std::index_sequence_for<Params...>{});
}

// The in-place entry's operands for decide_write() (csrc/core/inplace_decision.h), by the roles the declarations
// give each parameter (generated: safe_ops/_declarations.py decision_roles): 't'/'f' the target, 'o'/'g' a tensor
// operand, 'l' a list of them, 'c' a coefficient tensor, 'n' a number operand, 's' anything else.
template <typename P>
Operand operand_of(const Arg<P>& arg, char role) {
  Operand o;
  o.role = role;
  if constexpr (std::is_same_v<P, const at::Tensor&> || std::is_same_v<P, at::Tensor&>) {
    o.tensor = &arg.get();
  } else if constexpr (std::is_same_v<P, at::TensorList>) {
    o.list = arg.get();
  } else if constexpr (std::is_same_v<P, const c10::Scalar&>) {
    o.number = &arg.get();
    if (role != 'n') o.role = 's';
  } else {
    o.role = 's';
  }
  return o;
}

template <typename... Params, size_t... I>
PyObject* call_plain_inplace(const c10::TypedOperatorHandle<void(Params...)>& op, const char* roles,
                             PyObject* const* args, std::index_sequence<I...>) {
  std::tuple<Arg<Params>...> parsed;
  if (!(std::get<I>(parsed).parse(args[I]) && ...)) return not_implemented();
  const at::Tensor& target = std::get<0>(parsed).get();
  const std::array<Operand, sizeof...(Params)> operands{operand_of(std::get<I>(parsed), roles[I])...};
  if (decide_write(target, roles[0], c10::ArrayRef<Operand>(operands).slice(1), Mode::kEager) != Decision::kIN_PLACE) {
    return not_implemented();
  }
  Pins pins;  // after decide_write(): it reads the reference counts
  (pin(std::get<I>(parsed), pins), ...);
  {
    ReleaseGil no_gil;
    op.call(std::get<I>(parsed).get()...);
  }
  Py_INCREF(args[0]);
  return args[0];
}

// The in-place entry: writes and returns the target where decide_write() says IN_PLACE, else NotImplemented
// (nothing written): the Python wrapper then asks the same decision (_C._decide_write) and acts on it.
template <typename... Params>
PyObject* call_fast_inplace(const c10::TypedOperatorHandle<void(Params...)>& op, const char* roles,
                            PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != static_cast<Py_ssize_t>(sizeof...(Params)) || at::impl::torch_function_mode_enabled()) {
    return not_implemented();
  }
  return call_plain_inplace(op, roles, args, std::index_sequence_for<Params...>{});
}

using T = const at::Tensor&;
using S = const c10::Scalar&;
using TensorList = at::TensorList;
using Weights = std::optional<at::ArrayRef<double>>;
using Doubles = at::ArrayRef<double>;
using OptTensor = const std::optional<at::Tensor>&;

#define SAFE_OPS_FAST_ENTRY(py_name, schema_name, overload, ...)                                                       \
  PyObject* py_name(PyObject*, PyObject* const* args, Py_ssize_t nargs) {                                              \
    HANDLE_TH_ERRORS                                                                                                   \
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(schema_name, overload).typed<__VA_ARGS__>(); \
    return call_fast(op, args, nargs);                                                                                 \
    END_HANDLE_TH_ERRORS                                                                                               \
  }

#define SAFE_OPS_FAST_INPLACE_ENTRY(py_name, schema_name, overload, roles, ...)                                        \
  PyObject* py_name(PyObject*, PyObject* const* args, Py_ssize_t nargs) {                                              \
    HANDLE_TH_ERRORS                                                                                                   \
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(schema_name, overload).typed<__VA_ARGS__>(); \
    return call_fast_inplace(op, roles, args, nargs);                                                                  \
    END_HANDLE_TH_ERRORS                                                                                               \
  }

#define SAFE_OPS_METHOD(name) \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name)), METH_FASTCALL, nullptr}

// The generated table (csrc/generated/entries.cpp), terminated by a null entry.
extern PyMethodDef fast_entries[];

}  // namespace safe_ops::python
