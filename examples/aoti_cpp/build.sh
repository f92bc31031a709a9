#!/bin/sh
# Builds the C++ runner against the torch that $PYTHON (default: python) imports: its headers and libraries, no
# CMake needed. Usage: examples/aoti_cpp/build.sh OUTPUT (CXX picks the compiler; default c++). C++20: torch
# 2.14's headers need it (runner.cpp itself is C++17). --no-as-needed: the package's model library needs
# libtorch.so loaded (it has no path to torch's lib folder), though the runner calls nothing of it directly.
set -e
out=${1:?usage: build.sh OUTPUT}
torch=$("${PYTHON:-python}" -c "import os, torch; print(os.path.dirname(torch.__file__))")
abi=$("${PYTHON:-python}" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
exec "${CXX:-c++}" -std=c++20 -O1 -D_GLIBCXX_USE_CXX11_ABI="$abi" "$(dirname "$0")/runner.cpp" -o "$out" \
  -I"$torch/include" -I"$torch/include/torch/csrc/api/include" \
  -L"$torch/lib" -Wl,-rpath,"$torch/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -ldl
