#!/usr/bin/env python3
"""Build the broken environment shown in docs/doctor.md (nothing here is timed).

A venv (no system site-packages) with numpy linked in from this interpreter's
site-packages, plus an installed package ``mlt_demo`` (with a RECORD, so
doctor can name its owner) of small gcc-built extension modules, each broken
in one way: a missing library, a glibc version the system lacks, a C++
std::string ABI mismatch, and two modules that pull two OpenMP runtimes
(libgomp and an Intel-style runtime grafted under a hashed name).

    python benchmarks/doctor_demo_env.py /tmp/doctor-demo
    LD_LIBRARY_PATH=:/opt/lib mltools doctor --python /tmp/doctor-demo/bin/python
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile

INCLUDE = sysconfig.get_paths()["include"]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def module(name: str, body: str = "", decls: str = "") -> str:
    return (f"#include <Python.h>\n{decls}\n"
            f"static struct PyModuleDef def_ = {{PyModuleDef_HEAD_INIT, \"{name}\", NULL, -1, NULL}};\n"
            f"PyMODINIT_FUNC PyInit_{name}(void) {{ {body} return PyModule_Create(&def_); }}\n")


def main() -> None:
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "/tmp/doctor-demo")
    sh(sys.executable, "-m", "venv", "--without-pip", root)
    site = sysconfig.get_paths(vars={"base": root, "platbase": root})["platlib"]
    import numpy
    numpy_site = os.path.dirname(os.path.dirname(numpy.__file__))
    for name in os.listdir(numpy_site):
        if name in ("numpy", "numpy.libs") or (name.startswith("numpy-") and name.endswith(".dist-info")):
            if not os.path.exists(os.path.join(site, name)):
                os.symlink(os.path.join(numpy_site, name), os.path.join(site, name))
    pkg = os.path.join(site, "mlt_demo")
    os.makedirs(os.path.join(pkg, "abi.libs"), exist_ok=True)
    os.makedirs(os.path.join(site, "mlt_demo.libs"), exist_ok=True)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    with tempfile.TemporaryDirectory() as src:
        def write(name, text):
            path = os.path.join(src, name)
            with open(path, "w") as fh:
                fh.write(text)
            return path
        cc = ["gcc", "-shared", "-fPIC", "-I", INCLUDE]
        # a library that is gone after the build
        write("gone.c", "int mlt_gone(void) { return 1; }\n")
        sh("gcc", "-shared", "-fPIC", "-o", os.path.join(src, "libgone.so.1"), os.path.join(src, "gone.c"),
           "-Wl,-soname,libgone.so.1")
        sh(*cc, "-o", os.path.join(pkg, "needgone.so"), write("needgone.c", module("needgone", "mlt_gone();",
           "int mlt_gone(void);")), os.path.join(src, "libgone.so.1"))
        # a glibc version this system does not have (a stub libc.so.6 with a version script)
        os.makedirs(os.path.join(src, "stub"))
        write("v.map", "GLIBC_2.99 { global: mlt_future_fn; };\n")
        sh("gcc", "-shared", "-fPIC", "-nostdlib", "-o", os.path.join(src, "stub", "libc.so.6"),
           write("stub.c", "void mlt_future_fn(void) {}\n"), f"-Wl,--version-script={src}/v.map",
           "-Wl,-soname,libc.so.6")
        sh(*cc, "-o", os.path.join(pkg, "newglibc.so"), write("newglibc.c", module("newglibc", "mlt_future_fn();",
           "void mlt_future_fn(void);")), os.path.join(src, "stub", "libc.so.6"))
        # a C++ library built with the old std::string ABI, a module built with the new one
        write("prov.cc", "#include <string>\nnamespace mlt { int lookup(const std::string &k) { return (int)k.size(); } }\n")
        sh("g++", "-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0", "-o", os.path.join(pkg, "abi.libs", "libmltprov.so"),
           os.path.join(src, "prov.cc"))
        write("use.cc", "#include <string>\nnamespace mlt { int lookup(const std::string &key); }\n"
                        "extern \"C\" int mlt_call(void) { return mlt::lookup(\"x\"); }\n")
        sh("g++", "-c", "-fPIC", "-o", os.path.join(src, "use.o"), os.path.join(src, "use.cc"))
        sh("gcc", "-c", "-fPIC", "-I", INCLUDE, "-o", os.path.join(src, "abimod.o"),
           write("abimod.c", module("abimod", "mlt_call();", "int mlt_call(void);")))
        sh("g++", "-shared", "-o", os.path.join(pkg, "abimod.so"), os.path.join(src, "abimod.o"),
           os.path.join(src, "use.o"), "-L", os.path.join(pkg, "abi.libs"), "-Wl,--no-as-needed", "-lmltprov",
           "-Wl,-rpath,$ORIGIN/abi.libs")
        # two OpenMP runtimes: libgomp, and an Intel-style one grafted under a hashed name
        sh(*cc, "-fopenmp", "-o", os.path.join(pkg, "ompa.so"), write("ompa.c", module(
            "ompa", "int s = 0;\n#pragma omp parallel reduction(+:s)\ns += 1;\n(void)s;", "#include <omp.h>")))
        sh("gcc", "-shared", "-fPIC", "-Wl,-soname,libiomp5-3a1c2b4d.so", "-o",
           os.path.join(site, "mlt_demo.libs", "libiomp5-3a1c2b4d.so"),
           write("rt.c", "int __kmpc_fork_call(void) { return 0; }\nint __kmpc_global_thread_num(void) { return 0; }\n"))
        sh(*cc, "-o", os.path.join(pkg, "ompb.so"), write("ompb.c", module("ompb", "__kmpc_global_thread_num();",
           "int __kmpc_global_thread_num(void);")), "-L", os.path.join(site, "mlt_demo.libs"),
           "-l:libiomp5-3a1c2b4d.so", "-Wl,-rpath,$ORIGIN/../mlt_demo.libs")
    # an installed distribution: METADATA and RECORD
    info = os.path.join(site, "mlt_demo-0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\nName: mlt-demo\nVersion: 0.1\n")
    rows = []
    for base, _dirs, files in os.walk(pkg):
        for f in files:
            rows.append(os.path.relpath(os.path.join(base, f), site))
    rows += [os.path.join("mlt_demo.libs", f) for f in os.listdir(os.path.join(site, "mlt_demo.libs"))]
    with open(os.path.join(info, "RECORD"), "w") as fh:
        for rel in sorted(rows):
            data = open(os.path.join(site, rel), "rb").read()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            fh.write(f"{rel},sha256={digest},{len(data)}\n")
        fh.write("mlt_demo-0.1.dist-info/METADATA,,\nmlt_demo-0.1.dist-info/RECORD,,\n")
    print(os.path.join(root, "bin", "python"))


if __name__ == "__main__":
    main()
