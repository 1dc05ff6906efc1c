"""Native extensions only; all metadata lives in pyproject.toml.

Every C and Cython part is listed here so that `pip install .` from a clean
checkout builds it with no extra step. Plain C (no Python API) lives in csrc/;
Cython modules sit next to the Python module that wraps them.
"""
from setuptools import Extension, setup
from Cython.Build import cythonize

# Strict, portable warnings; never -march=native or fast-math (results must not
# depend on the build machine, and -ffast-math changes the FP environment).
C_FLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fno-fast-math", "-ffp-contract=off"]

cython_extensions = [
    Extension(
        "mltools._cpu",
        ["mltools/_cpu.pyx", "csrc/cpu/cpu_features.c"],
        include_dirs=["csrc/cpu"],
        extra_compile_args=C_FLAGS,
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
plain_extensions = []

setup(
    ext_modules=cythonize(
        cython_extensions,
        compiler_directives={"language_level": 3, "embedsignature": True},
        quiet=True,
    )
    + plain_extensions,
)
