"""Builds two libraries into the safe_ops package: libsafe_ops.so, the op library (schemas, CPU kernels always, CUDA
kernels too when torch is a CUDA build and nvcc is found, autograd, the in-place decision; no Python dependency, so
a libtorch program or an AOTInductor runner can load it), and the Python extension safe_ops._C (the fast entry
points), which links it. SAFE_OPS_CUDA=0|1 forces CUDA either way. Never build with pip's build isolation: it would
fetch another torch.
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


def _generate() -> tuple:
    # The C++ that safe_ops/_declarations.py implies (schemas, operator names, kernel dtypes, foreach list, fast
    # entry points), committed in csrc/generated/; rewritten here only where the declarations changed it, so a build
    # never compiles stale code (`make generate` does the same without building).
    sys.path.insert(0, os.path.join(ROOT, "csrc", "codegen"))
    import generate  # noqa: E402

    generate.main()
    return os.path.relpath(generate.SCHEMAS, ROOT), os.path.relpath(generate.ENTRIES, ROOT)


# safe_ops/libsafe_ops.so (not a Python module: no ABI suffix), which C++ programs load; safe_ops.library_path().
OPS_LIBRARY = "safe_ops.libsafe_ops"


def _extensions() -> list:
    schemas, entries = _generate()
    # The op library: every layer but the Python binding (csrc/python) and the tests' CUDA simulation.
    layers = ("core", "ops", "autograd", "cpu")
    sources = sorted(s for layer in layers for s in glob.glob(f"csrc/{layer}/*.cpp")) + [schemas]
    # -fopenmp: at::parallel_for inlines OpenMP pragmas; without it our loops would run on one thread.
    # -fno-trapping-math: lets the compiler vectorise selects such as lerp's two forms (results unchanged; we
    # never read floating-point exception flags).
    # -ffp-contract=fast: `a + b*c` is one FMA in the loops built for FMA CPUs (isa_loops.h), as torch's kernels
    # compute it; code built for baseline x86-64 has no FMA instruction to contract to.
    # -g0 (unless SAFE_OPS_DEBUG=1): Python's own flags add -g, and debug info of torch's templates would be most
    # of the library's size.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-ffp-contract=fast"]
    cxx += [] if os.environ.get("SAFE_OPS_DEBUG") == "1" else ["-g0"]
    # -s (unless SAFE_OPS_DEBUG=1): no symbol table beyond the dynamic one (11% of the op library; only debuggers
    # and profilers read it).
    strip = [] if os.environ.get("SAFE_OPS_DEBUG") == "1" else ["-s"]
    # The soname is what the Python extension records as its dependency (found beside it through $ORIGIN).
    # -Bsymbolic-functions: the library's calls to its own functions bind to them at link time (no PLT lookup, and
    # never to another library's copy of an inline function).
    link = ["-fopenmp", "-Wl,-soname,libsafe_ops.so", "-Wl,-Bsymbolic-functions"] + strip
    # Includes are relative to csrc ("core/formulas.h", "generated/operators.h").
    includes = [os.path.join(ROOT, "csrc")]
    if not _want_cuda():
        ops = cpp_extension.CppExtension(
            OPS_LIBRARY, sources, include_dirs=includes, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    else:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # torch picks the visible GPUs' archs; with none visible it would fail. H100/H200 are 9.0; the PTX lets a
            # later chip JIT-compile the kernels.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        ops = cpp_extension.CUDAExtension(
            OPS_LIBRARY,
            sources,
            include_dirs=includes + _cuda_include_dirs(),
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    # torch_python would make the op library need libpython; it uses nothing of it.
    ops.libraries = [lib for lib in ops.libraries if lib != "torch_python"]
    # The binding finds libsafe_ops.so in its own folder, in place and installed. The same flags: inline functions
    # both libraries define must compile alike (the dynamic linker may bind the op library's calls to the binding's).
    # csrc/cuda_on_host: the CUDA kernels' bodies run on the host for the tests (built with or without CUDA); test
    # code, so in the binding, not in the op library C++ programs deploy.
    binding = cpp_extension.CppExtension(
        "safe_ops._C",
        ["csrc/python/module.cpp", entries] + sorted(glob.glob("csrc/cuda_on_host/*.cpp")),
        include_dirs=includes,
        extra_compile_args={"cxx": cxx},
        libraries=["safe_ops"],
        extra_link_args=["-Wl,-rpath,$ORIGIN"] + strip,
    )
    return [ops, binding]  # in this order: the binding links the op library


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    def get_ext_filename(self, fullname):
        # Called with the full name and with its last part (setuptools' get_ext_fullpath).
        if fullname.split(".")[-1] == OPS_LIBRARY.split(".")[-1]:
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if ext.name != OPS_LIBRARY:  # link against the op library just built (build/lib.*/safe_ops)
            ext.library_dirs.append(os.path.dirname(self.get_ext_fullpath(OPS_LIBRARY)))
        super().build_extension(ext)


setup(
    name="safe_ops",
    version="0.1.0",
    description="Fused, autograd-safe accumulation ops for PyTorch (add, sub, addcmul, lerp, accumulate)",
    packages=find_packages(include=["safe_ops", "safe_ops.*"]),
    package_data={"safe_ops": ["py.typed"]},
    python_requires=f">={SUPPORT['name'](SUPPORT['OLDEST_PYTHON'])}",
    install_requires=[f"torch>={SUPPORT['name'](SUPPORT['OLDEST_TORCH'])}"],
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
