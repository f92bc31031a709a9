// foreach_<op>_inplace(self[], operands[], scalars, scalar_tensor): one fused in-place pass of the op's formula over
// every member of a list (the multi-tensor kernels: csrc/cpu/foreach_kernels.cpp, csrc/cuda/foreach_kernels.cu). The
// ops are listed in safe_ops/_declarations.py (FOREACH_OPS); safe_ops.foreach_<op>_ applies the in-place rules per
// member and sends here only the members to write. Every argument check runs before any member is written, so
// a bad member leaves the whole list unchanged.
#include <ATen/MemoryOverlap.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/op_support.h"

namespace safe_ops {
namespace {

bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.strides() == b.strides();
}

// `o` in `dtype` with `like`'s strides (the kernel reads member and operands as flat runs of the same order).
at::Tensor operand_like(const at::Tensor& o, const at::Tensor& like, at::ScalarType dtype) {
  if (o.scalar_type() == dtype && same_layout(o, like)) return o;
  at::Tensor out = at::empty_like(like, like.options().dtype(dtype));
  out.copy_(o);
  return out;
}

void check_args(at::TensorList self, at::TensorList operands, int nlists, at::ArrayRef<double> scalars,
                const at::Tensor& scalar_tensor, const char* name) {
  const size_t n = self.size();
  TORCH_CHECK(n > 0, "safe_ops.", name, ": expects a non-empty list of tensors");
  TORCH_CHECK(operands.size() == n * static_cast<size_t>(nlists), "safe_ops.", name, ": expected ", n * nlists,
              " operands (", nlists, " per member) for ", n, " members, got ", operands.size());
  const c10::Device device = self[0].device();
  if (scalar_tensor.defined()) {
    TORCH_CHECK(scalar_tensor.dim() == 1 && scalar_tensor.numel() == static_cast<int64_t>(n), "safe_ops.", name,
                ": a tensor of per-member numbers must be 1-D with one value per member (", n, "), got shape ",
                scalar_tensor.sizes());
    // A CPU tensor of numbers joins members on any device, as torch takes a CPU scalar tensor for alpha/weight.
    TORCH_CHECK(scalar_tensor.device() == device || scalar_tensor.is_cpu(), "safe_ops.", name,
                ": the per-member numbers are on ", scalar_tensor.device(), " but the members on ", device);
    check_result_dtype(scalar_tensor.scalar_type(), name);
  } else {
    TORCH_CHECK(scalars.size() == n, "safe_ops.", name, ": expected ", n, " numbers (one per member), got ",
                scalars.size());
  }
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& t = self[i];
    TORCH_CHECK(t.device() == device, "safe_ops.", name, ": expected every tensor on one device, ", device,
                ", but member ", i, " is on ", t.device());
    check_result_dtype(t.scalar_type(), name);
    TORCH_CHECK(at::has_internal_overlap(t) != at::MemOverlap::Yes, "safe_ops.", name, ": member ", i,
                " has elements that share memory (an expanded tensor) and cannot be written in place");
    for (int k = 0; k < nlists; ++k) {
      const at::Tensor& o = operands[i * nlists + k];
      TORCH_CHECK(o.device() == device, "safe_ops.", name, ": expected every tensor on one device, ", device,
                  ", but operand ", k, " of member ", i, " is on ", o.device());
      check_result_dtype(o.scalar_type(), name);
      TORCH_CHECK(o.sizes() == t.sizes(), "safe_ops.", name, ": operand ", k, " of member ", i, " has shape ",
                  o.sizes(), ", the member ", t.sizes(), " (the shapes must be equal)");
      at::assert_no_partial_overlap(t, o);
    }
  }
}

// [first, last) byte span of a tensor's elements (a superset of the bytes it touches).
std::pair<uintptr_t, uintptr_t> span(const at::Tensor& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  int64_t hi = 0, lo = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t extent = (t.size(d) - 1) * t.stride(d);
    (extent > 0 ? hi : lo) += extent;
  }
  return {base + lo * t.element_size(), base + (hi + 1) * t.element_size()};
}

// Whether some member's memory may meet another member's memory or operands: the fused pass runs members in
// parallel, so then they are run one after another, in list order, as torch's foreach ops do. Spans are sorted,
// so the check stays O(n log n) for the hot EMA / optimizer call over every parameter.
bool members_interact(at::TensorList self, at::TensorList operands, int nlists) {
  struct Span {
    uintptr_t first, last;
    size_t member;
    bool is_member;
  };
  std::vector<Span> spans;
  spans.reserve(self.size() * (1 + nlists));
  for (size_t i = 0; i < self.size(); ++i) {
    if (self[i].numel() == 0) continue;
    auto [f, l] = span(self[i]);
    spans.push_back({f, l, i, true});
    for (int k = 0; k < nlists; ++k) {
      const at::Tensor& o = operands[i * nlists + k];
      if (o.numel() == 0) continue;
      auto [of, ol] = span(o);
      spans.push_back({of, ol, i, false});
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.first < b.first; });
  // Sweep: the open spans that reach past each start; two of different members where one is a member meet.
  std::vector<Span> open;
  for (const auto& sp : spans) {
    open.erase(std::remove_if(open.begin(), open.end(), [&](const Span& o) { return o.last <= sp.first; }), open.end());
    for (const auto& o : open) {
      if (o.member != sp.member && (o.is_member || sp.is_member)) return true;
    }
    open.push_back(sp);
  }
  return false;
}

// Where the per-tensor op leaves a member to torch's CPU kernel because torch's bits depend on its loops, not its
// formula, foreach does too, and stays equal to the per-tensor op: add_ of float16/bfloat16 with alpha != 1
// (csrc/ops/add.cpp), lerp_ at a number weight of exactly 1 (csrc/ops/lerp.cpp). Writes the member and says so. A rule
// of torch's CPU loops only: torch's CUDA kernels are one formula each, which the fused CUDA kernel computes.
bool torch_writes_member(ForeachId op, const at::Tensor& t, const at::Tensor& operand, double value) {
  if (!t.is_cpu()) return false;
  const at::ScalarType dtype = t.scalar_type();
  if (operand.scalar_type() != dtype) return false;
  if (op == ForeachId::add && value != 1.0 && (dtype == at::kHalf || dtype == at::kBFloat16)) {
    t.add_(operand, value);
    return true;
  }
  if (op == ForeachId::lerp && lerp_weight_is_one(value, dtype)) {
    t.lerp_(operand, value);
    return true;
  }
  return false;
}

// Groups members by (member dtype, operand dtype) and runs the fused kernel once per group. `first` is the index of
// self[0] in the caller's list (for the per-member numbers on the device).
void run_fused(const DispatchStub<ForeachFn>& stub, ForeachId op, int nlists, at::TensorList self,
               at::TensorList operands, at::ArrayRef<double> scalars, const at::Tensor& device_values, size_t first) {
  const c10::Device device = self[0].device();
  std::vector<ForeachGroup> groups;                           // one per (member dtype, operand dtype): usually one
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;  // (member, dense copy written in its place)
  for (size_t i = 0; i < self.size(); ++i) {
    const at::Tensor& t = self[i];
    if (t.numel() == 0) continue;
    // Per-member numbers in a tensor are read here only on the CPU, where that costs no device sync.
    const bool host_value = !device_values.defined() || device.is_cpu();
    const double value = !device_values.defined() ? scalars[i]
                         : device.is_cpu()        ? device_values.const_data_ptr<double>()[first + i]
                                                  : 1.0;
    if (host_value && torch_writes_member(op, t, operands[i * nlists], value)) continue;
    at::ScalarType operand_dtype = operands[i * nlists].scalar_type();
    for (int k = 1; k < nlists; ++k)
      operand_dtype = c10::promoteTypes(operand_dtype, operands[i * nlists + k].scalar_type());
    // Strided members (slices, ...) are computed in a dense copy and copied back: the fused pass reads flat runs.
    at::Tensor target = t;
    if (!t.is_non_overlapping_and_dense()) {
      target = t.contiguous();
      write_back.emplace_back(t, target);
    }
    ForeachGroup* group = nullptr;
    for (auto& g : groups) {
      if (g.dtype == t.scalar_type() && g.operand_dtype == operand_dtype) group = &g;
    }
    if (group == nullptr) {
      groups.emplace_back();
      group = &groups.back();
      group->noperands = nlists;
      group->dtype = t.scalar_type();
      group->operand_dtype = operand_dtype;
      group->scalar_tensor = device_values;
    }
    group->members.push_back(target);
    for (int k = 0; k < nlists; ++k)
      group->operands.push_back(operand_like(operands[i * nlists + k], target, operand_dtype));
    if (device_values.defined()) {
      group->index.push_back(static_cast<int64_t>(first + i));
    } else {
      group->scalars.push_back(scalars[i]);
    }
  }
  for (const auto& g : groups) stub(device.type())(g);
  for (auto& [member, dense] : write_back) member.copy_(dense);
}

void foreach_inplace(const DispatchStub<ForeachFn>& stub, ForeachId op, int nlists, at::TensorList self,
                     at::TensorList operands, at::ArrayRef<double> scalars,
                     const std::optional<at::Tensor>& scalar_tensor, const char* name) {
  at::Tensor values = scalar_tensor.has_value() ? *scalar_tensor : at::Tensor();
  check_args(self, operands, nlists, scalars, values, name);
  // From here on nothing depends on the arguments' validity: members are written only below.
  OpDeviceGuard guard(self[0].device());
  std::vector<double> cpu_values;  // numbers from a CPU tensor for members elsewhere: read here, no device sync
  if (values.defined() && values.is_cpu() && !self[0].is_cpu()) {
    const at::Tensor v = values.to(at::kDouble).contiguous();
    cpu_values.assign(v.const_data_ptr<double>(), v.const_data_ptr<double>() + v.numel());
    scalars = cpu_values;
    values = at::Tensor();
  }
  // Converted on the device, asynchronously: the values never travel to the host.
  const at::Tensor device_values = values.defined() ? values.to(at::kDouble).contiguous() : at::Tensor();
  if (!members_interact(self, operands, nlists)) {
    run_fused(stub, op, nlists, self, operands, scalars, device_values, 0);
    return;
  }
  for (size_t i = 0; i < self.size(); ++i) {
    if (self[i].numel() == 0) continue;
    run_fused(stub, op, nlists, self.slice(i, 1), operands.slice(i * nlists, nlists),
              device_values.defined() ? at::ArrayRef<double>() : scalars.slice(i, 1), device_values, i);
  }
}

#define SAFE_OPS_FOREACH_IMPL(base, formula, nlists)                                                        \
  void foreach_##base##_inplace(at::TensorList self, at::TensorList operands, at::ArrayRef<double> scalars, \
                                const std::optional<at::Tensor>& scalar_tensor) {                           \
    foreach_inplace(foreach_##base##_stub, ForeachId::base, nlists, self, operands, scalars, scalar_tensor, \
                    "foreach_" #base "_");                                                                  \
  }
SAFE_OPS_FOREACH_OPS(SAFE_OPS_FOREACH_IMPL)
#undef SAFE_OPS_FOREACH_IMPL

void register_impls(torch::Library& m) {
#define SAFE_OPS_FOREACH_REGISTER(base, formula, nlists) \
  m.impl(schema::foreach_##base##_inplace.impl_name, foreach_##base##_inplace);
  SAFE_OPS_FOREACH_OPS(SAFE_OPS_FOREACH_REGISTER)
#undef SAFE_OPS_FOREACH_REGISTER
}

}  // namespace

SAFE_OPS_IMPL_CPU_AND_CUDA(register_impls)

}  // namespace safe_ops
