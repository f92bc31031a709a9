"""Builds the safe_ops._C extension: CPU kernels always; CUDA kernels too when torch is a CUDA build and nvcc is
found. SAFE_OPS_CUDA=0|1 forces either way. Never build with pip's build isolation: it would fetch another torch.
"""
import glob
import os
import runpy
import site
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# torch's cpp_extension reads CUDA_HOME when imported; nvcc on these machines lives in /usr/local/cuda.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

# The supported releases, from the one place that states them (a plain file: the package cannot be imported yet).
SUPPORT = runpy.run_path(os.path.join(ROOT, "safe_ops", "_support.py"))
if SUPPORT["release"](torch.__version__) < SUPPORT["OLDEST_TORCH"]:
    sys.exit(f"safe_ops needs torch >= {SUPPORT['name'](SUPPORT['OLDEST_TORCH'])}; torch {torch.__version__} is "
             "installed in this environment")


def _want_cuda() -> bool:
    forced = os.environ.get("SAFE_OPS_CUDA")
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if forced is None:
        return available
    if forced == "1" and not available:
        sys.exit("SAFE_OPS_CUDA=1, but torch is not a CUDA build or nvcc was not found (set CUDA_HOME)")
    return forced == "1"


def _cuda_include_dirs() -> list:
    # pip's CUDA torch wheels keep the CUDA headers (cusparse.h, ...) in site-packages/nvidia/*/include.
    dirs = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        dirs += sorted(glob.glob(os.path.join(base, "nvidia", "*", "include")))
    return dirs


def _generate_registration() -> str:
    # Schemas and fast entry points come from safe_ops/_declarations.py (csrc/codegen/generate.py).
    sys.path.insert(0, os.path.join(ROOT, "csrc", "codegen"))
    import generate  # noqa: E402

    generate.main()
    return os.path.relpath(generate.OUTPUT, ROOT)


def _extension():
    # csrc/cuda_on_host: the CUDA kernels' bodies run on the host for the tests (built with or without CUDA).
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autograd/*.cpp")
                     + glob.glob("csrc/cuda_on_host/*.cpp"))
    sources.append(_generate_registration())
    # -fopenmp: at::parallel_for inlines OpenMP pragmas; without it our loops would run on one thread.
    # -fno-trapping-math: lets the compiler vectorise selects such as lerp's two forms (results unchanged; we
    # never read floating-point exception flags).
    # -ffp-contract=fast: `a + b*c` is one FMA in the loops built for FMA CPUs (isa_loops.h), as torch's kernels
    # compute it; code built for baseline x86-64 has no FMA instruction to contract to.
    # -I csrc: for the generated file.
    # -g0 (unless SAFE_OPS_DEBUG=1): Python's own flags add -g, and debug info of torch's templates would be most
    # of the library's size.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-ffp-contract=fast", f"-I{os.path.join(ROOT, 'csrc')}"]
    cxx += [] if os.environ.get("SAFE_OPS_DEBUG") == "1" else ["-g0"]
    link = ["-fopenmp"]
    generated = [os.path.join(ROOT, "build", "generated")]  # foreach_ops.h
    if not _want_cuda():
        return cpp_extension.CppExtension(
            "safe_ops._C", sources, include_dirs=generated, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch picks the visible GPUs' archs; with none visible it would fail. H100/H200 are 9.0; the PTX lets a
        # later chip JIT-compile the kernels.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
    return cpp_extension.CUDAExtension(
        "safe_ops._C",
        sources,
        include_dirs=generated + _cuda_include_dirs(),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    name="safe_ops",
    version="0.1.0",
    description="Fused, autograd-safe accumulation ops for PyTorch (add, sub, addcmul, lerp, accumulate)",
    packages=find_packages(include=["safe_ops", "safe_ops.*"]),
    package_data={"safe_ops": ["py.typed"]},
    python_requires=f">={SUPPORT['name'](SUPPORT['OLDEST_PYTHON'])}",
    install_requires=[f"torch>={SUPPORT['name'](SUPPORT['OLDEST_TORCH'])}"],
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
