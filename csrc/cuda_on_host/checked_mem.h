// The host simulation's memory accessor (the interface of cuda_detail::DirectMem): every load and store of a
// simulated kernel body must lie inside one noted buffer (a tensor's span, or a virtual buffer) and be aligned to
// its access size (16 bytes for the vector accesses); a violation throws, naming the access. Virtual buffers have
// no memory behind them: loads compute each element from its index, stores are checked and sampled, so index
// arithmetic past 2^31 elements can run without allocating it.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/TensorBase.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/grid.h"

namespace safe_ops {
namespace cuda_on_host {

struct VirtualBuffer {
  at::ScalarType dtype;
  std::function<double(int64_t)> value;  // element i's value, for loads
  int64_t record_from = INT64_MAX;       // stores of elements >= this are recorded
  std::vector<std::pair<int64_t, double>>* stores = nullptr;
};

struct Region {
  uintptr_t begin, end;
  const VirtualBuffer* virt;  // null: real memory
};

struct Counts {
  int64_t loads = 0, stores = 0, vector_loads = 0, vector_stores = 0, blocks = 0, launches = 0;
};

template <typename V>
struct IsVec : std::false_type {};
template <typename T, int N>
struct IsVec<cuda_detail::Vec<T, N>> : std::true_type {};

class CheckedMem {
 public:
  CheckedMem(const std::vector<Region>* regions, Counts* counts) : regions_(regions), counts_(counts) {}

  template <typename V>
  V load(const void* p) const {
    const Region& r = check(p, sizeof(V), alignof(V), "load");
    ++counts_->loads;
    if (IsVec<V>::value) ++counts_->vector_loads;
    V v;
    if (r.virt == nullptr) {
      std::memcpy(&v, p, sizeof(V));
    } else {
      read_virtual(r, p, &v, sizeof(V));
    }
    return v;
  }

  template <typename V>
  void store(void* p, const V& v) const {
    const Region& r = check(p, sizeof(V), alignof(V), "store");
    ++counts_->stores;
    if (IsVec<V>::value) ++counts_->vector_stores;
    if (r.virt == nullptr) {
      std::memcpy(p, &v, sizeof(V));
    } else {
      write_virtual(r, p, &v, sizeof(V));
    }
  }

 private:
  const Region& check(const void* p, size_t size, size_t align, const char* what) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    TORCH_CHECK(a % align == 0, "cuda_on_host: misaligned ", size, "-byte ", what, " at ", p, " (needs ", align,
                "-byte alignment)");
    const std::vector<Region>& regions = *regions_;
    if (last_ < regions.size() && a >= regions[last_].begin && a + size <= regions[last_].end) return regions[last_];
    for (size_t i = 0; i < regions.size(); ++i) {
      if (a >= regions[i].begin && a + size <= regions[i].end) {
        last_ = i;  // the next access is most likely to the same buffer
        return regions[i];
      }
    }
    TORCH_CHECK(false, "cuda_on_host: out-of-bounds ", size, "-byte ", what, " at ", p,
                ": not inside any buffer the kernel was given");
    return regions_->front();  // (not reached)
  }

  static void read_virtual(const Region& r, const void* p, void* out, size_t size) {
    const size_t es = c10::elementSize(r.virt->dtype);
    const int64_t first = static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) - r.begin) / es);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.virt->dtype, "cuda_on_host_read", [&] {
      for (size_t j = 0; j < size / es; ++j) {
        const scalar_t x = static_cast<scalar_t>(r.virt->value(first + static_cast<int64_t>(j)));
        std::memcpy(static_cast<char*>(out) + j * es, &x, es);
      }
    });
  }

  static void write_virtual(const Region& r, const void* p, const void* in, size_t size) {
    const size_t es = c10::elementSize(r.virt->dtype);
    const int64_t first = static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) - r.begin) / es);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.virt->dtype, "cuda_on_host_write", [&] {
      for (size_t j = 0; j < size / es; ++j) {
        const int64_t i = first + static_cast<int64_t>(j);
        if (i < r.virt->record_from || r.virt->stores == nullptr) continue;
        scalar_t x;
        std::memcpy(&x, static_cast<const char*>(in) + j * es, es);
        r.virt->stores->emplace_back(i, static_cast<double>(x));
      }
    });
  }

  const std::vector<Region>* regions_;
  Counts* counts_;
  mutable size_t last_ = 0;
};

}  // namespace cuda_on_host
}  // namespace safe_ops
