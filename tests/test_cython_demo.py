"""mltools cython demo: the pitfalls happen for real, and the checker flags
exactly the versions that go wrong.

The demo compiles one module (the only C compilation of the cython tests) and
runs it in a child process; the truth for each case comes from numpy
(``arr.ctypes.data``, the array's values) and Python (the bytes' first byte).
"""
import re
import shutil
import sysconfig
from pathlib import Path

import pytest

from mltools.cythoncheck import check_paths
from mltools.cythoncheck.demo import DEMO_PYX

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None
    or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists(),
    reason="needs a C compiler and the Python headers")


@needs_compiler
def test_demo_shows_every_pitfall_and_fix(cli):
    res = cli("cython", "demo", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.cython.demo"
    cases = {c["name"]: c for c in doc["cases"]}
    assert set(cases) == {"int_address", "int_read", "int_write", "data_address", "data_read",
                          "char_data", "bytes_read"}
    assert all(c["wrong_is_wrong"] and c["fixed_is_right"] for c in cases.values())
    # <void*>pyint gives the int object's own address, far from the array's data.
    c = cases["int_address"]
    assert c["fixed"] == c["truth"] and int(c["wrong"], 16) != int(c["truth"], 16)
    # Writing through it changed the Python int instead of the array.
    assert "array[3] = 4.0" in cases["int_write"]["wrong"] and "array[3] = 1.0" in cases["int_write"]["fixed"]
    # cdef char* p = arr.data on an untyped array raises at run time.
    assert cases["char_data"]["wrong"].startswith("TypeError")
    assert cases["bytes_read"]["truth"] == str(ord("Z"))


def test_checker_flags_exactly_the_wrong_demo_functions(tmp_path):
    pyx = tmp_path / "pitfalls.pyx"
    pyx.write_text(DEMO_PYX)
    report = check_paths([str(pyx)])
    lines = DEMO_PYX.splitlines()
    func_of_line = {}
    current = None
    for i, line in enumerate(lines, 1):
        m = re.match(r"def (\w+)", line)
        if m:
            current = m.group(1)
        func_of_line[i] = current
    flagged = {func_of_line[f.line]: f.code for f in report.findings}
    wrong = {re.match(r"def (\w+)", l).group(1) for l in lines if re.match(r"def \w+_wrong", l)}
    assert set(flagged) == wrong
    assert flagged["address_wrong"] == "CYP001"     # the name `addr` says it holds an address
    assert flagged["data_address_wrong"] == "CYP002" and flagged["char_data_wrong"] == "CYP002"
    assert flagged["bytes_first_wrong"] == "CYP003"
