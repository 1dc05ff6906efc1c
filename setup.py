"""Native extensions only; all metadata lives in pyproject.toml.

Every C and Cython part is listed here so that `pip install .` from a clean
checkout builds it with no extra step. Plain C (no Python API) lives in csrc/;
Cython modules sit next to the Python module that wraps them.
"""
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from Cython.Build import cythonize

# Strict, portable warnings; never -march=native or fast-math (results must not
# depend on the build machine, and -ffast-math changes the FP environment).
C_FLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fno-fast-math", "-ffp-contract=off"]
# Our own C (csrc/) also builds clean with these; the C that Cython generates for
# the .pyx glue converts function pointers as CPython's API does, which
# -Wpedantic flags, so they apply to csrc/ files only (tests/test_c_build.py
# compiles every csrc/ file with them and -Werror).
STRICT_C_FLAGS = ["-Wshadow", "-Wpedantic"]


class StrictCBuildExt(build_ext):
    """build_ext that adds STRICT_C_FLAGS to the sources under csrc/."""

    def build_extensions(self):
        compile_one = getattr(self.compiler, "_compile", None)
        if compile_one is not None:
            def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
                if os.path.normpath(src).startswith("csrc" + os.sep):
                    extra_postargs = list(extra_postargs) + STRICT_C_FLAGS
                return compile_one(obj, src, ext, cc_args, extra_postargs, pp_opts)
            self.compiler._compile = _compile
        super().build_extensions()

cython_extensions = [
    Extension(
        "mltools._cpu",
        ["mltools/_cpu.pyx", "csrc/cpu/cpu_features.c"],
        include_dirs=["csrc/cpu"],
        extra_compile_args=C_FLAGS,
    ),
    # Summation kernels: -O3 for the vector loops; the AVX2/AVX-512 variants
    # get their ISA from per-file `#pragma GCC target` and run after a CPU check.
    Extension(
        "mltools.summation._kernels",
        ["mltools/summation/_kernels.pyx", "csrc/summation/summation.c",
         "csrc/summation/kernels_sse2.c", "csrc/summation/kernels_avx2.c",
         "csrc/summation/kernels_avx512.c", "csrc/cpu/cpu_features.c"],
        include_dirs=["csrc/summation", "csrc/cpu"],
        extra_compile_args=C_FLAGS + ["-O3"],
    ),
    Extension(
        "mltools.numa._numa",
        ["mltools/numa/_numa.pyx", "csrc/numa/numa_kernels.c", "csrc/numa/numa_run.c",
         "csrc/cpu/cpu_features.c"],
        include_dirs=["csrc/numa", "csrc/cpu"],
        extra_compile_args=C_FLAGS + ["-pthread"],
        extra_link_args=["-pthread"],
    ),
]

# Plain shared objects that are never imported (LD_PRELOAD shims): built as
# extensions so they land inside the package and make the wheel platform-tagged.
plain_extensions = [
    # malloc-fail's LD_PRELOAD shim: initial-exec TLS (a replacement malloc must
    # not go through __tls_get_addr), only the allocation functions exported,
    # _Unwind_Backtrace from libgcc_s so that unwinding never dlopens.
    # csrc/preload/ is what both shims share (the record channel, scope, call sites, exec records).
    Extension(
        "mltools.mallocfail._shim",
        ["csrc/mallocfail/mallocfail.c", "csrc/preload/preload.c"],
        include_dirs=["csrc/preload"],
        extra_compile_args=C_FLAGS + ["-ftls-model=initial-exec", "-fvisibility=hidden",
                                      "-fno-builtin-malloc", "-fno-builtin-free"],
        libraries=["gcc_s"],
    ),
    # io-fail's LD_PRELOAD shim: the file-system calls a checkpoint writer makes.
    Extension(
        "mltools.iofail._shim",
        ["csrc/iofail/iofail.c", "csrc/preload/preload.c"],
        include_dirs=["csrc/preload"],
        extra_compile_args=C_FLAGS + ["-fvisibility=hidden"],
        libraries=["gcc_s", "dl"],
    ),
]

setup(
    cmdclass={"build_ext": StrictCBuildExt},
    ext_modules=cythonize(
        cython_extensions,
        compiler_directives={"language_level": 3, "embedsignature": True},
        quiet=True,
    )
    + plain_extensions,
)
