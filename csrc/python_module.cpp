// The Python module safe_ops._C. Importing it registers the ops (static initialisers in this library). It also
// carries:
// - the in-place safety decision, written against the borrowed Python tensor so that reference counts are
//   exactly what autograd and other tensors hold, with no argument-passing copies in between;
// - fast entry points for the Python wrappers: each parses its known signature straight from the Python
//   objects and calls the op through the dispatcher (autograd, device kernels, dispatch modes all apply as
//   usual). torch.ops' generic schema-driven argument parsing costs about as much as a whole tiny add; these
//   skip it. They return NotImplemented for anything unusual (tensor subclasses, torch-function modes,
//   non-number scalars) and the wrapper then takes the torch.ops path, which handles everything.
#include <Python.h>

#include <ATen/MemoryOverlap.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/SavedTensorHooks.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

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
  if (held_elsewhere) return kCopyHeldElsewhere;
  if (shared_storage) return kCopySharedStorage;
  // Last, so that it is reported only when nothing else forbids the write (safe_ops.guard's own hooks keep
  // what they save visible to the counts above, and the Python side may then allow the write).
  if (grad_mode && at::SavedTensorDefaultHooks::get_hooks().has_value()) return kCopyHooksActive;
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


// ---- fast entry points -------------------------------------------------------------------------------------

// Plain tensors and Parameters only: other subclasses may override __torch_function__.
bool is_plain_tensor(PyObject* obj) {
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
  std::vector<at::Tensor> tensors;
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
  std::optional<std::vector<double>> values;
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

struct ReleaseGil {
  ReleaseGil() : state(PyEval_SaveThread()) {}
  ~ReleaseGil() { PyEval_RestoreThread(state); }
  PyThreadState* state;
};

PyObject* not_implemented() {
  Py_INCREF(Py_NotImplemented);
  return Py_NotImplemented;
}

template <typename Ret, typename... Params, size_t... I>
PyObject* call_parsed(const c10::TypedOperatorHandle<Ret(Params...)>& op, PyObject* const* args,
                      std::index_sequence<I...>) {
  std::tuple<Arg<Params>...> parsed;
  if (!(std::get<I>(parsed).parse(args[I]) && ...)) return not_implemented();
  if constexpr (std::is_void_v<Ret>) {
    {
      ReleaseGil no_gil;
      op.call(std::get<I>(parsed).get()...);
    }
    Py_RETURN_NONE;
  } else {
    at::Tensor result;
    {
      ReleaseGil no_gil;
      result = op.call(std::get<I>(parsed).get()...);
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

using T = const at::Tensor&;
using S = const c10::Scalar&;
using TensorList = at::TensorList;
using Weights = std::optional<at::ArrayRef<double>>;

#define SAFE_OPS_FAST(py_name, schema_name, overload, ...)                                     \
  PyObject* py_name(PyObject*, PyObject* const* args, Py_ssize_t nargs) {                     \
    HANDLE_TH_ERRORS                                                                          \
    static const auto op = c10::Dispatcher::singleton()                                       \
                               .findSchemaOrThrow("safe_ops::" schema_name, overload)         \
                               .typed<__VA_ARGS__>();                                         \
    return call_fast(op, args, nargs);                                                        \
    END_HANDLE_TH_ERRORS                                                                      \
  }

SAFE_OPS_FAST(add_tensor, "add", "Tensor", at::Tensor(T, T, S))
SAFE_OPS_FAST(add_scalar, "add", "Scalar", at::Tensor(T, S, S))
SAFE_OPS_FAST(sub_tensor, "sub", "Tensor", at::Tensor(T, T, S))
SAFE_OPS_FAST(sub_scalar, "sub", "Scalar", at::Tensor(T, S, S))
SAFE_OPS_FAST(accumulate, "accumulate", "", at::Tensor(TensorList, Weights))
SAFE_OPS_FAST(accumulate_weights_tensor, "accumulate", "weights_tensor", at::Tensor(TensorList, T))
SAFE_OPS_FAST(addcmul, "addcmul", "", at::Tensor(T, T, T, S))
SAFE_OPS_FAST(lerp_scalar, "lerp", "Scalar", at::Tensor(T, T, S))
SAFE_OPS_FAST(lerp_tensor, "lerp", "Tensor", at::Tensor(T, T, T))
SAFE_OPS_FAST(add_inplace_tensor, "add_inplace", "Tensor", void(at::Tensor&, T, S))
SAFE_OPS_FAST(add_inplace_scalar, "add_inplace", "Scalar", void(at::Tensor&, S, S))
SAFE_OPS_FAST(sub_inplace_tensor, "sub_inplace", "Tensor", void(at::Tensor&, T, S))
SAFE_OPS_FAST(sub_inplace_scalar, "sub_inplace", "Scalar", void(at::Tensor&, S, S))
SAFE_OPS_FAST(accumulate_inplace, "accumulate_inplace", "", void(at::Tensor&, TensorList, Weights))
SAFE_OPS_FAST(accumulate_inplace_weights_tensor, "accumulate_inplace", "weights_tensor",
              void(at::Tensor&, TensorList, T))
SAFE_OPS_FAST(addcmul_inplace, "addcmul_inplace", "", void(at::Tensor&, T, T, S))
SAFE_OPS_FAST(lerp_inplace_scalar, "lerp_inplace", "Scalar", void(at::Tensor&, T, S))
SAFE_OPS_FAST(lerp_inplace_tensor, "lerp_inplace", "Tensor", void(at::Tensor&, T, T))

#define SAFE_OPS_FAST_ENTRY(name) \
  {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name)), METH_FASTCALL, nullptr}

PyMethodDef methods[] = {
    {"_inplace_decision", inplace_decision, METH_O,
     "In-place safety decision for a tensor (see safe_ops/_inplace.py)."},
    SAFE_OPS_FAST_ENTRY(add_tensor),
    SAFE_OPS_FAST_ENTRY(add_scalar),
    SAFE_OPS_FAST_ENTRY(sub_tensor),
    SAFE_OPS_FAST_ENTRY(sub_scalar),
    SAFE_OPS_FAST_ENTRY(accumulate),
    SAFE_OPS_FAST_ENTRY(accumulate_weights_tensor),
    SAFE_OPS_FAST_ENTRY(addcmul),
    SAFE_OPS_FAST_ENTRY(lerp_scalar),
    SAFE_OPS_FAST_ENTRY(lerp_tensor),
    SAFE_OPS_FAST_ENTRY(add_inplace_tensor),
    SAFE_OPS_FAST_ENTRY(add_inplace_scalar),
    SAFE_OPS_FAST_ENTRY(sub_inplace_tensor),
    SAFE_OPS_FAST_ENTRY(sub_inplace_scalar),
    SAFE_OPS_FAST_ENTRY(accumulate_inplace),
    SAFE_OPS_FAST_ENTRY(accumulate_inplace_weights_tensor),
    SAFE_OPS_FAST_ENTRY(addcmul_inplace),
    SAFE_OPS_FAST_ENTRY(lerp_inplace_scalar),
    SAFE_OPS_FAST_ENTRY(lerp_inplace_tensor),
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
