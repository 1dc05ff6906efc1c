"""``mltools cython demo``: compile tiny Cython functions with the installed
Cython and C compiler, and run them, so each pitfall is seen happening.

Every case has a wrong version (what the checker flags) and a fixed one; both
read the same memory and the result is compared with the truth taken from
numpy (``arr.ctypes.data``, the array's values) or from Python (``id``). The
module runs in a child process: the wrong versions read freed or foreign
memory, and one of them writes into a Python int on purpose.
"""
from __future__ import annotations

import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from mltools import _proc
from mltools.errors import MissingDependencyError, SubprocessError, ToolNotFoundError

DEMO_PYX = r'''
# cython: language_level=3
from libc.stdint cimport uintptr_t

# CYP001: a Python int that holds an address.
def address_wrong(addr):
    return <uintptr_t><void*>addr                # the int object's own address
def address_fixed(addr):
    return <uintptr_t><void*><uintptr_t>addr     # the address the int holds

def first_wrong(addr):
    cdef double* p = <double*><void*>addr        # points into the int object
    return p[0]
def first_fixed(addr):
    cdef double* p = <double*><uintptr_t>addr
    return p[0]

def store_wrong(addr, double value):
    cdef double* p = <double*><void*>addr
    p[3] = value                                 # lands in the int's digits
def store_fixed(addr, double value):
    cdef double* p = <double*><uintptr_t>addr
    p[3] = value

# CYP002: .data of an untyped array is a temporary memoryview object.
def data_address_wrong(arr):
    return <uintptr_t><void*>arr.data
def data_address_fixed(double[::1] v):
    return <uintptr_t>&v[0]

def data_first_wrong(arr):
    return (<double*><void*>arr.data)[0]
def data_first_fixed(double[::1] v):
    return (<double*>&v[0])[0]

def char_data_wrong(arr):
    cdef char* p = arr.data                      # raises: expected bytes, memoryview found
    return p[0]

# CYP003: <void*> of a bytes object points at its header.
def bytes_first_wrong(bytes b):
    return (<unsigned char*><void*>b)[0]
def bytes_first_fixed(bytes b):
    return (<const unsigned char*>b)[0]
'''

DEMO_RUNNER = r'''
import json, sys
import numpy as np
import pitfalls as m

out = []
def case(name, rule, truth, wrong, fixed, what):
    out.append(dict(name=name, rule=rule, what=what, truth=truth, wrong=wrong, fixed=fixed))

def attempt(fn, *a):
    try:
        v = fn(*a)
        return v if not isinstance(v, float) else repr(v)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

arr = np.array([3.25, 1.5, 2.0, 4.0, 5.0, 6.0])
addr = arr.ctypes.data
case("int_address", "CYP001", hex(addr), hex(m.address_wrong(addr)), hex(m.address_fixed(addr)),
     "<void*>addr on a Python int holding the array's address")
case("int_read", "CYP001", repr(float(arr[0])), attempt(m.first_wrong, addr), attempt(m.first_fixed, addr),
     "first double read through <double*><void*>addr")
before = addr
value_before = hex(before)
m.store_wrong(before, 1.0)
case("int_write", "CYP001", "array[3] becomes 1.0 and the int keeps its value",
     f"array[3] = {float(arr[3])!r}; the int now reads {hex(before)} (was {value_before})",
     None, "p[3] = 1.0 through <double*><void*>addr")
fresh = arr.ctypes.data
m.store_fixed(fresh, 1.0)
out[-1]["fixed"] = f"array[3] = {float(arr[3])!r}; the int still reads {hex(fresh)}"
b = np.array([7.5, 8.5])
case("data_address", "CYP002", hex(b.ctypes.data), hex(m.data_address_wrong(b)), hex(m.data_address_fixed(b)),
     "<void*>arr.data on an untyped numpy array")
case("data_read", "CYP002", repr(float(b[0])), attempt(m.data_first_wrong, b), attempt(m.data_first_fixed, b),
     "first double read through <double*><void*>arr.data")
case("char_data", "CYP002", repr(float(b[0])), attempt(m.char_data_wrong, b), attempt(m.data_first_fixed, b),
     "cdef char* p = arr.data on an untyped numpy array")
s = b"Z-bytes"
case("bytes_read", "CYP003", s[0], attempt(m.bytes_first_wrong, s), attempt(m.bytes_first_fixed, s),
     "first byte read through <unsigned char*><void*>b")
json.dump(dict(cases=out), sys.stdout)
'''


@dataclass(frozen=True)
class DemoCase:
    name: str
    rule: str
    what: str          # the expression shown
    truth: str         # what a correct read gives, from numpy/Python
    wrong: str         # what the flagged version gave
    fixed: str         # what the fixed version gave
    wrong_is_wrong: bool
    fixed_is_right: bool


@dataclass(frozen=True)
class DemoReport:
    SCHEMA: ClassVar[str] = "mltools.cython.demo"
    SCHEMA_VERSION: ClassVar[int] = 1
    cython_version: str
    compiler: str
    build_s: float
    cases: Tuple[DemoCase, ...]

    @property
    def all_shown(self) -> bool:
        return all(c.wrong_is_wrong and c.fixed_is_right for c in self.cases)


def _compiler() -> str:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    prog = cc.split()[0]
    path = _proc.which(prog) or _proc.which("cc") or _proc.which("gcc")
    if path is None:
        raise ToolNotFoundError("mltools cython demo needs a C compiler (cc/gcc): apt-get install gcc")
    return path


def run_demo(workdir: Optional[str] = None, timeout_s: float = 120.0) -> DemoReport:
    """Build the demo module in a temporary directory and run every case."""
    import Cython

    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise MissingDependencyError(f"mltools cython demo needs the Python headers ({include}/Python.h): "
                                     "apt-get install python3-dev")
    cc = _compiler()
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    from mltools._lifecycle import temp_dir

    with temp_dir(prefix="mltools-cython-demo-", dir=workdir) as tmp:
        pyx = os.path.join(tmp, "pitfalls.pyx")
        with open(pyx, "w") as fh:
            fh.write(DEMO_PYX)
        c_file = os.path.join(tmp, "pitfalls.c")
        r1 = _proc.run([sys.executable, "-m", "cython", "-3", pyx, "-o", c_file],
                       timeout=timeout_s, cwd=tmp)
        if r1.returncode != 0:
            raise SubprocessError(f"cython failed on the demo module: {' '.join(r1.stderr.split())[:300]}")
        so = os.path.join(tmp, "pitfalls" + suffix)
        r2 = _proc.run([cc, "-shared", "-fPIC", "-O0", "-w", f"-I{include}", c_file, "-o", so],
                       timeout=timeout_s, cwd=tmp)
        if r2.returncode != 0:
            raise SubprocessError(f"{os.path.basename(cc)} failed on the demo module: "
                                  f"{' '.join(r2.stderr.split())[:300]}")
        env = dict(os.environ)
        env["PYTHONPATH"] = tmp + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        r3 = _proc.run([sys.executable, "-c", DEMO_RUNNER], timeout=timeout_s, cwd=tmp, env=env)
        if r3.returncode != 0:
            why = r3.signal_name or f"exit status {r3.returncode}"
            raise SubprocessError(f"the demo module's run failed ({why}): {' '.join(r3.stderr.split())[-300:]}")
        build_s = r1.elapsed_s + r2.elapsed_s
    doc = json.loads(r3.stdout)
    cases = []
    for c in doc["cases"]:
        truth, wrong, fixed = (str(c["truth"]), str(c["wrong"]), str(c["fixed"]))
        if c["name"] == "int_write":
            wrong_bad = "array[3] = 4.0" in wrong and "was" in wrong and not _same_int_text(wrong)
            fixed_ok = "array[3] = 1.0" in fixed
        else:
            wrong_bad, fixed_ok = wrong != truth, fixed == truth
        cases.append(DemoCase(c["name"], c["rule"], c["what"], truth, wrong, fixed, wrong_bad, fixed_ok))
    return DemoReport(Cython.__version__, os.path.basename(cc), round(build_s, 2), tuple(cases))


def _same_int_text(text: str) -> bool:
    # "the int now reads 0xA (was 0xB)": unchanged only if A == B.
    try:
        now = text.split("now reads ")[1].split(" ")[0]
        was = text.split("(was ")[1].rstrip(")")
        return now == was
    except IndexError:
        return True
