// Runs an AOTInductor package of a model that calls safe_ops ops (model.py), with no Python: it loads safe_ops'
// op library first (its static initialisers register torch.ops.safe_ops.*, which the package calls through the
// dispatcher), then the package. Usage: runner MODEL.pt2 LIBSAFE_OPS.so [OUTPUT.bin: the result's float32 bytes]
#include <dlfcn.h>

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdio>
#include <fstream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s MODEL.pt2 LIBSAFE_OPS.so [OUTPUT.bin]\n", argv[0]);
    return 2;
  }
  if (dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "cannot load the op library: %s\n", dlerror());
    return 1;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    // model.py's inputs(), made the same way.
    const int64_t dim = 16, n = 4 * dim;
    at::Tensor x = at::linspace(-1.0, 1.0, n).reshape({4, dim});
    at::Tensor y = at::linspace(0.0, 2.0, n).reshape({4, dim}).cos();
    at::Tensor w = at::linspace(-3.0, 3.0, n).reshape({4, dim});
    std::vector<at::Tensor> outputs = loader.run({x, y, w});
    const at::Tensor out = outputs.at(0).contiguous();
    std::printf("c++:    shape [%lld, %lld] sum %.6f first row [", static_cast<long long>(out.size(0)),
                static_cast<long long>(out.size(1)), out.sum().item<double>());
    for (int64_t i = 0; i < 4; ++i) std::printf("%.6f ", out[0][i].item<double>());
    std::printf("...]\n");
    if (argc == 4) {
      std::ofstream file(argv[3], std::ios::binary);
      file.write(static_cast<const char*>(out.data_ptr()), static_cast<std::streamsize>(out.nbytes()));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "runner: %s\n", e.what());
    return 1;
  }
  return 0;
}
