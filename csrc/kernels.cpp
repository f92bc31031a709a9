#include "kernels.h"

#include <c10/util/Exception.h>

#include <array>

namespace safe_ops {
namespace {
std::array<const DeviceKernels*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
registry() {
  static std::array<const DeviceKernels*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      table{};
  return table;
}
}  // namespace

RegisterKernels::RegisterKernels(c10::DeviceType type, const DeviceKernels& kernels) {
  registry()[static_cast<size_t>(type)] = &kernels;
}

const DeviceKernels& kernels_for(c10::DeviceType type) {
  const DeviceKernels* kernels = registry()[static_cast<size_t>(type)];
  TORCH_CHECK(kernels != nullptr, "safe_ops has no ", c10::DeviceTypeName(type),
              " kernels in this build. For CUDA, rebuild with nvcc available (SAFE_OPS_CUDA=1): "
              "pip install --no-build-isolation -e .");
  return *kernels;
}

}  // namespace safe_ops
