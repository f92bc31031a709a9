// The CUDA kernels executed on the host, for the tests (tests/test_cuda_on_host.py), torch.ops.safe_ops_cuda_on_host:
//   enable(on, resident_blocks): while on, every safe_ops CPU kernel is replaced by the CUDA kernel's host code
//     and kernel bodies (csrc/cuda/) run over a simulated grid on the CPU tensors, through CheckedMem (bounds and
//     alignment of every access): the ops, called on CPU tensors, compute what the CUDA kernels would.
//   counts(): [loads, vector loads, stores, vector stores, launches, blocks] since enable(True).
//   big_elementwise / big_foreach: a 2^31+ element launch over virtual buffers, some blocks only (sparse).
//   self_test(fault): a launch the checks must stop.
#include <ATen/Dispatch.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "cuda/foreach_members.h"
#include "cuda/kernel_hosts.h"
#include "core/dispatch_stubs.h"
#include "cuda_on_host/host_exec.h"

namespace safe_ops {
namespace cuda_on_host {

SimState& sim_state() {
  static SimState state;
  return state;
}

namespace {

HostExec fresh_exec() {
  SimState& st = sim_state();
  st.regions.clear();
  return HostExec{&st};
}

void sim_linear_combination(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  cuda_detail::linear_combination(fresh_exec(), iter, c);
}
void sim_scale_many(at::TensorIteratorBase& iter, const LinearCoeffs& c) {
  cuda_detail::scale_many(fresh_exec(), iter, c);
}
void sim_dot_many(at::TensorIteratorBase& iter, const at::Tensor& result) {
  cuda_detail::dot_many(fresh_exec(), iter, result);
}
template <template <typename...> class Formula>
void sim_pointwise(at::TensorIteratorBase& iter, const formulas::Scalars& scalars) {
  cuda_detail::pointwise_kernel<Formula>(fresh_exec(), iter, scalars);
}

template <template <typename...> class Formula>
void sim_foreach(const ForeachGroup& g) {
  if (g.members.empty()) return;
  const HostExec exec = fresh_exec();
  for (const auto& t : g.members) exec.note(t);
  for (const auto& t : g.operands) exec.note(t);
  exec.note(g.scalar_tensor);
  constexpr int N = Formula<float>::kIn;
  const double* values = g.scalar_tensor.defined() ? g.scalar_tensor.const_data_ptr<double>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.dtype, "cuda_on_host_foreach", [&] {
    using member_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.operand_dtype, "cuda_on_host_foreach_operand", [&] {
      exec.foreach<member_t, scalar_t, Formula, N>(foreach_detail::members_of<N>(g), values);
    });
  });
}

// Each stub's CPU kernel and its simulated CUDA kernel; swap() exchanges them.
template <typename Fn>
struct Swap {
  DispatchStub<Fn>* stub;
  Fn sim;
  Fn saved = nullptr;
  void swap(bool on) {
    if (on && saved == nullptr) {
      saved = (*stub)(c10::DeviceType::CPU);
      stub->set(c10::DeviceType::CPU, sim);
    } else if (!on && saved != nullptr) {
      stub->set(c10::DeviceType::CPU, saved);
      saved = nullptr;
    }
  }
};

void swap_all(bool on) {
  static std::vector<Swap<LinearFn>> linear{{&linear_combination_stub, sim_linear_combination},
                                            {&scale_many_stub, sim_scale_many}};
  static std::vector<Swap<DotManyFn>> dots{{&dot_many_stub, sim_dot_many}};
#define SAFE_OPS_SIM_POINTWISE(name, formula) {&name##_stub, sim_pointwise<formulas::formula>},
  static std::vector<Swap<PointwiseFn>> pointwise{SAFE_OPS_POINTWISE_FORMULAS(SAFE_OPS_SIM_POINTWISE)};
#undef SAFE_OPS_SIM_POINTWISE
#define SAFE_OPS_SIM_FOREACH(base, formula, nlists) {&foreach_##base##_stub, sim_foreach<formulas::formula>},
  static std::vector<Swap<ForeachFn>> foreach{SAFE_OPS_FOREACH_OPS(SAFE_OPS_SIM_FOREACH)};
#undef SAFE_OPS_SIM_FOREACH
  for (auto& s : linear) s.swap(on);
  for (auto& s : dots) s.swap(on);
  for (auto& s : pointwise) s.swap(on);
  for (auto& s : foreach) s.swap(on);
}

void enable(bool on, int64_t resident_blocks) {
  SimState& st = sim_state();
  st.counts = Counts{};
  st.resident_blocks = static_cast<int>(resident_blocks);
  st.only_blocks.clear();
  st.foreach_from = 0;
  swap_all(on);
}

std::vector<int64_t> counts() {
  const Counts& c = sim_state().counts;
  return {c.loads, c.vector_loads, c.stores, c.vector_stores, c.launches, c.blocks};
}

// Virtual operands of n elements: a[i] = i % 7, b[i] = i % 5 + 1 (exact in every dtype), the output recorded from
// element record_from on. Buffers 2^40 bytes apart, each shifted by `offset` elements (0: 16-byte aligned).
struct BigCase {
  VirtualBuffer a, b, out;
  std::vector<std::pair<int64_t, double>> stores;
  uintptr_t base[3];
  BigCase(at::ScalarType dtype, int64_t n, int64_t offset, int64_t record_from) {
    a = VirtualBuffer{dtype, [](int64_t i) { return double(i % 7); }};
    b = VirtualBuffer{dtype, [](int64_t i) { return double(i % 5 + 1); }};
    out = VirtualBuffer{dtype, [](int64_t) { return 0.0; }, record_from, &stores};
    const int64_t es = static_cast<int64_t>(c10::elementSize(dtype));
    const VirtualBuffer* bufs[3] = {&out, &a, &b};
    SimState& st = sim_state();
    st.regions.clear();
    for (int k = 0; k < 3; ++k) {
      base[k] = (uintptr_t(1) << 44) + uintptr_t(k) * (uintptr_t(1) << 40) + uintptr_t(offset * es);
      st.regions.push_back(Region{base[k], base[k] + uintptr_t(n * es), bufs[k]});
    }
  }
  std::tuple<at::Tensor, at::Tensor> result() const {
    std::vector<int64_t> idx;
    std::vector<double> val;
    for (const auto& [i, v] : stores) {
      idx.push_back(i);
      val.push_back(v);
    }
    return {at::tensor(idx, at::kLong), at::tensor(val, at::kDouble)};
  }
};

// a + 0.5·b over n elements through the contiguous kernel (the linear-combination op, as add(a, b, alpha=0.5)),
// simulating only `blocks` of the grid.
std::tuple<at::Tensor, at::Tensor> big_elementwise(int64_t n, at::ScalarType dtype, int64_t offset,
                                                   int64_t resident_blocks, at::IntArrayRef blocks,
                                                   int64_t record_from) {
  SimState& st = sim_state();
  st.counts = Counts{};
  st.resident_blocks = static_cast<int>(resident_blocks);
  BigCase big(dtype, n, offset, record_from);
  st.only_blocks.assign(blocks.begin(), blocks.end());
  const HostExec exec{&st};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cuda_on_host_big", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    using Op = cuda_detail::LinearCombination<opmath_t>;
    cuda_detail::GroupWeights<opmath_t> w{};
    w.host[0] = opmath_t(1);
    w.host[1] = opmath_t(0.5);
    w.device = nullptr;
    w.n = 2;
    const Op op{w, nullptr, nullptr, false, opmath_t(0), opmath_t(0)};
    cuda_detail::Ptrs<Op::kOut + Op::kIn> ptrs{};
    bool aligned = true;
    for (int k = 0; k < 3; ++k) {
      ptrs.p[k] = reinterpret_cast<char*>(big.base[k]);
      aligned = aligned && big.base[k] % cuda_detail::kVecBytes == 0;
    }
    constexpr int kVec = cuda_detail::kVecBytes / sizeof(scalar_t);
    const int nblocks = cuda_detail::blocks_for(exec, aligned ? cuda_detail::ceil_div(n, kVec) : n);
    exec.contiguous<scalar_t>(nblocks, ptrs, n, aligned, op);
  });
  st.only_blocks.clear();
  return big.result();
}

// foreach_add_(member, operand, alpha=0.5) on one member of n elements, simulating only the chunks that reach
// past record_from.
std::tuple<at::Tensor, at::Tensor> big_foreach(int64_t n, at::ScalarType dtype, int64_t record_from) {
  SimState& st = sim_state();
  st.counts = Counts{};
  BigCase big(dtype, n, 0, record_from);
  big.out.value = big.a.value;  // the member is read and written in place
  st.regions.erase(st.regions.begin() + 1);
  st.foreach_from = record_from;
  const HostExec exec{&st};
  foreach_detail::Member<2> m{{reinterpret_cast<void*>(big.base[0]), reinterpret_cast<void*>(big.base[2])}, n, 0.5, 0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cuda_on_host_big_foreach",
                                  [&] { exec.foreach<scalar_t, scalar_t, formulas::Add, 2>({m}, nullptr); });
  st.foreach_from = 0;
  return big.result();
}

// The checks' own test: the contiguous body of a + b over a 64-float buffer with one element too many
// ("overrun"), or vectorised on a pointer one float past alignment ("misaligned"). Throws the check's error.
void self_test(c10::string_view fault) {
  SimState& st = sim_state();
  st.regions.clear();
  at::Tensor buf = at::zeros({65}, at::kFloat);
  const bool overrun = fault == "overrun";
  TORCH_CHECK(overrun || fault == "misaligned", "self_test: overrun or misaligned");
  at::Tensor t = overrun ? buf.slice(0, 0, 64) : buf.slice(0, 1, 65);
  const HostExec exec{&st};
  exec.note(t);
  using Op = cuda_detail::LinearCombination<float>;
  cuda_detail::GroupWeights<float> w{};
  w.host[0] = w.host[1] = 1.0f;
  w.device = nullptr;
  w.n = 2;
  const Op op{w, nullptr, nullptr, false, 0.0f, 0.0f};
  cuda_detail::Ptrs<Op::kOut + Op::kIn> ptrs{};
  for (int k = 0; k < 3; ++k) ptrs.p[k] = static_cast<char*>(t.data_ptr());
  exec.contiguous<float>(1, ptrs, overrun ? 65 : 64, /*vectorised=*/!overrun, op);
}

}  // namespace

TORCH_LIBRARY(safe_ops_cuda_on_host, m) {
  m.def("enable(bool on, int resident_blocks) -> ()", enable);
  m.def("counts() -> int[]", counts);
  m.def("self_test(str fault) -> ()", self_test);
  m.def(
      "big_elementwise(int n, ScalarType dtype, int offset, int resident_blocks, int[] blocks, int record_from) -> "
      "(Tensor, Tensor)",
      big_elementwise);
  m.def("big_foreach(int n, ScalarType dtype, int record_from) -> (Tensor, Tensor)", big_foreach);
}

}  // namespace cuda_on_host
}  // namespace safe_ops
