"""``mltools elf trace`` against the real loader.

Oracles: what running the fixture prints (ld.so's own error messages), and
``grep -c`` over the raw LD_DEBUG files kept with ``--keep``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mltools.elf import lddebug

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="needs gcc")


def _gcc(*argv: str) -> None:
    proc = subprocess.run([GCC, *argv], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(argv)} failed:\n{proc.stderr}")


def build_elf_fixtures(root: Path) -> dict:
    """Small programs that make ld.so fail in each way the elf tools report.

    - v1/libver.so.1 defines FOO_1; v2/libver.so.1 FOO_1 and FOO_2. ``m2`` is
      linked against v2 but its RUNPATH finds v1: version `FOO_2' not found.
    - u1/libu.so calls baz() that nothing defines; ``m3`` loads it: undefined symbol.
    - ``m4`` needs libu.so from a RUNPATH that does not exist: not found.
    - ``mi`` needs liba and libb, both defining ``shared_sym``; libb calls it,
      and the copy in liba (first in the scope) wins: an interposition.
    """
    root.mkdir(parents=True, exist_ok=True)
    for d in ("v1", "v2", "u1", "u2", "i"):
        (root / d).mkdir(exist_ok=True)
    (root / "v1.map").write_text("FOO_1 { global: foo; local: *; };\n")
    (root / "v2.map").write_text("FOO_1 { global: foo; local: *; };\nFOO_2 { global: foo2; } FOO_1;\n")
    (root / "v1.c").write_text("int foo(void){return 1;}\n")
    (root / "v2.c").write_text("int foo(void){return 1;} int foo2(void){return 2;}\n")
    (root / "m2.c").write_text("int foo(void); int foo2(void); int main(void){return foo()+foo2()-3;}\n")
    (root / "u.c").write_text("int baz(void); int bar(void){return baz();}\n")
    (root / "baz.c").write_text("int baz(void){return 0;}\n")
    (root / "m3.c").write_text("int bar(void); int main(void){return bar();}\n")
    (root / "a.c").write_text("int shared_sym(void){return 1;} int a_only(void){return 0;}\n")
    (root / "b.c").write_text("int shared_sym(void){return 2;} int b_call(void){return shared_sym();}\n")
    (root / "mi.c").write_text("int a_only(void); int b_call(void);\n"
                               "int main(void){return b_call() == 1 ? 0 : 3;}\n")
    r = str(root)
    _gcc("-shared", "-fPIC", "-o", f"{r}/v1/libver.so.1", f"{r}/v1.c", "-Wl,-soname,libver.so.1",
         f"-Wl,--version-script,{r}/v1.map")
    _gcc("-shared", "-fPIC", "-o", f"{r}/v2/libver.so.1", f"{r}/v2.c", "-Wl,-soname,libver.so.1",
         f"-Wl,--version-script,{r}/v2.map")
    _gcc("-o", f"{r}/m2", f"{r}/m2.c", f"-L{r}/v2", "-l:libver.so.1", "-Wl,-rpath,$ORIGIN/v1")
    _gcc("-shared", "-fPIC", "-o", f"{r}/u2/libu.so", f"{r}/u.c", f"{r}/baz.c")
    _gcc("-shared", "-fPIC", "-o", f"{r}/u1/libu.so", f"{r}/u.c")
    _gcc("-o", f"{r}/m3", f"{r}/m3.c", f"-L{r}/u2", "-lu", "-Wl,-rpath,$ORIGIN/u1")
    _gcc("-o", f"{r}/m4", f"{r}/m3.c", f"-L{r}/u2", "-lu", "-Wl,-rpath,$ORIGIN/nowhere")
    _gcc("-shared", "-fPIC", "-o", f"{r}/i/liba.so", f"{r}/a.c")
    _gcc("-shared", "-fPIC", "-o", f"{r}/i/libb.so", f"{r}/b.c")
    _gcc("-o", f"{r}/mi", f"{r}/mi.c", f"-L{r}/i", "-Wl,--no-as-needed", "-la", "-lb",
         "-Wl,-rpath,$ORIGIN/i")
    return {name: root / name for name in ("m2", "m3", "m4", "mi")}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    if GCC is None:
        pytest.skip("needs gcc")
    return build_elf_fixtures(tmp_path_factory.mktemp("elffx"))


def _run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([f"./{path.name}"], cwd=path.parent, capture_output=True, text=True, timeout=60)


def _trace(cli, *args, cwd=None):
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        return cli("elf", "trace", *args)
    finally:
        os.chdir(old)


def _codes(doc):
    return [f["code"] for f in doc["findings"]]


# ---------------------------------------------------------------------------
# Loader failures, compared with what running the program prints

def test_version_missing_matches_the_loader(cli, fx):
    real = _run(fx["m2"])
    assert real.returncode == 1
    assert "version `FOO_2' not found (required by ./m2)" in real.stderr
    res = _trace(cli, "--json", "--", "./m2", cwd=fx["m2"].parent)
    assert res.exit_code == real.returncode
    doc = res.json()
    assert doc["schema"] == "mltools.elf.trace" and doc["version"] == 1
    assert "VERSION_MISSING" in _codes(doc)
    (prog,) = doc["programs"]
    assert not prog["started"] and prog["name"] == "./m2"
    (fail,) = prog["version_failures"]
    assert fail["message"] == "version `FOO_2' not found (required by ./m2)"
    assert fail["object"].endswith("/v1/libver.so.1")
    # the search: RUNPATH of m2 found v1 first
    lib = next(lib for lib in prog["libraries"] if lib["name"] == "libver.so.1")
    assert lib["path"].endswith("/v1/libver.so.1") and lib["requested_by"] == "./m2"
    assert lib["search"][0]["source"] == "RUNPATH from file ./m2"


def test_missing_library_matches_the_loader(cli, fx):
    real = _run(fx["m4"])
    assert real.returncode == 127 and "libu.so: cannot open shared object file" in real.stderr
    res = _trace(cli, "--json", "--", "./m4", cwd=fx["m4"].parent)
    assert res.exit_code == 127
    doc = res.json()
    assert "MISSING" in _codes(doc)
    (prog,) = doc["programs"]
    (lib,) = prog["libraries"]
    assert lib["name"] == "libu.so" and lib["path"] is None
    sources = [s["source"] for s in lib["search"]]
    assert sources[0] == "RUNPATH from file ./m4" and "cache" in sources
    assert sources[-1] == "system search path"
    # every file ld.so tried is listed, and none of them exists
    tried = [t for s in lib["search"] for t in s["tried"]]
    assert tried and not any(os.path.exists(t) for t in tried)


def test_undefined_symbol_matches_the_loader(cli, fx):
    real = _run(fx["m3"])
    assert real.returncode == 127 and "undefined symbol: baz" in real.stderr
    res = _trace(cli, "--json", "--", "./m3", cwd=fx["m3"].parent)
    assert res.exit_code == 127
    doc = res.json()
    (prog,) = doc["programs"]
    assert prog["started"]              # lazy binding fails after start-up
    (err,) = prog["errors"]
    assert err["kind"] == "symbol lookup error" and err["message"] == "undefined symbol: baz"
    assert err["object"].endswith("/u1/libu.so") and err["fatal"]
    assert "UNDEFINED" in _codes(doc)


def test_interposition_first_definition_wins(cli, fx, tmp_path):
    real = _run(fx["mi"])
    assert real.returncode == 0          # b_call() got liba's shared_sym
    res = _trace(cli, "--json", "--categories", "libs,bindings", "--keep", str(tmp_path / "raw"),
                 "--", "./mi", cwd=fx["mi"].parent)
    assert res.exit_code == 0
    (prog,) = res.json()["programs"]
    raw = "".join(p.read_text() for p in (tmp_path / "raw").iterdir())
    # ld.so's own binding line is the oracle for which copy won
    assert re.search(r"binding file \S+/i/libb\.so \[0\] to \S+/i/liba\.so \[0\]: normal symbol `shared_sym'", raw)
    assert prog["bindings"]["bound_to"]["shared_sym"] == [inter_provider := prog["bindings"]["bound_to"]["shared_sym"][0]]
    assert inter_provider.endswith("/i/liba.so")
    inter = {i["symbol"]: i for i in prog["bindings"]["interpositions"]}
    assert inter["shared_sym"]["bound_to"].endswith("/i/liba.so")
    assert [p.rsplit("/", 1)[-1] for p in inter["shared_sym"]["also_defined_in"]] == ["libb.so"]
    text = _trace(cli, "--categories", "bindings", "--symbol", "shared_*", "--", "./mi", cwd=fx["mi"].parent).stdout
    assert re.search(r"shared_sym -> \S+/i/liba\.so$", text, re.M)


# ---------------------------------------------------------------------------
# Real programs: counts against grep -c over the raw output

def _grep_c(raw_dir: Path, pattern: str) -> int:
    return sum(len(re.findall(pattern, p.read_text(errors="replace"), re.M)) for p in raw_dir.iterdir())


def _check_counts(doc, raw: Path):
    progs = doc["programs"]
    assert doc["processes"] == len(list(raw.iterdir()))
    nonblank = _grep_c(raw, r"^\s*\d+:\t?.*\S")
    assert doc["line_count"] == nonblank
    assert sum(p["version_checks"] for p in progs) == _grep_c(raw, r"checking for version `")
    assert sum(1 for p in progs if p["started"] and p["forked_from"] is None) == \
        _grep_c(raw, r"initialize program: ")
    found = sum(1 for p in progs for lib in p["libraries"] if lib["path"])
    assert found == _grep_c(raw, r"generating link map$")
    dl = sum(1 for p in progs for lib in p["libraries"] if lib["how"] == "dlopen")
    assert dl == _grep_c(raw, r"dynamically loaded by ")
    searched = sum(1 for p in progs for lib in p["libraries"] if lib["searched"])
    assert searched == _grep_c(raw, r"find library=")
    tried = sum(len(s["tried"]) for p in progs for lib in p["libraries"] for s in lib["search"])
    assert tried == _grep_c(raw, r"  trying file=")
    if "bindings" in doc["categories"]:
        assert sum(p["bindings"]["total"] for p in progs) == _grep_c(raw, r"binding file ")


def test_python_import_numpy_counts(cli, tmp_path):
    pytest.importorskip("numpy")
    raw = tmp_path / "raw"
    res = cli("elf", "trace", "--json", "--categories", "all", "--keep", str(raw), "--",
              sys.executable, "-c", "import numpy")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["unparsed_count"] == 0, doc["programs"][0]["unparsed"]
    _check_counts(doc, raw)
    (prog,) = [p for p in doc["programs"] if p["started"]]
    libs = {os.path.basename(lib["name"]): lib for lib in prog["libraries"]}
    umath = next(v for k, v in libs.items() if k.startswith("_multiarray_umath"))
    assert umath["how"] == "dlopen" and umath["requested_by"]
    probe = subprocess.run([sys.executable, "-c", "import numpy, sys; "
                            "m = sys.modules.get('numpy._core._multiarray_umath') or "
                            "sys.modules['numpy.core._multiarray_umath']; print(m.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert os.path.samefile(umath["path"], probe.stdout.strip())


def test_wrapper_script_that_execs_python(cli, tmp_path):
    pytest.importorskip("numpy")
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    raw = tmp_path / "raw"
    res = cli("elf", "trace", "--json", "--keep", str(raw), "--", str(wrapper), "-c", "import numpy")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    _check_counts(doc, raw)
    assert doc["target"]["kind"] == "script"
    # one PID, two programs: the shell, then python after exec
    first_pid = doc["programs"][0]["pid"]
    same = [p for p in doc["programs"] if p["pid"] == first_pid]
    assert [p["index"] for p in same] == [0, 1]
    assert same[0]["name"] == "/bin/sh"
    assert os.path.realpath(same[1]["name"]) == os.path.realpath(sys.executable)
    # the numpy extension belongs to python, not to the shell
    assert not any("_multiarray_umath" in lib["name"] for lib in same[0]["libraries"])
    assert any("_multiarray_umath" in lib["name"] and lib["how"] == "dlopen" for lib in same[1]["libraries"])


def test_bin_true_and_exit_status_passthrough(cli, tmp_path):
    res = cli("elf", "trace", "--json", "--", "/bin/true")
    assert res.exit_code == 0
    doc = res.json()
    assert [p["name"] for p in doc["programs"]] == ["/bin/true"]
    assert [lib["name"] for lib in doc["programs"][0]["libraries"]] == ["libc.so.6"]
    assert cli("elf", "trace", "--", "/bin/false").exit_code == 1
    res = cli("elf", "trace", "--json", "--", "/bin/sh", "-c", "kill -TERM $$")
    assert res.exit_code == 128 + 15 and res.json()["signal"] == "SIGTERM"


def test_target_stdout_and_report_file(tmp_path):
    """--json: stdout is the report only; --report FILE: the target's stdout stays on stdout."""
    exe = [sys.executable, "-m", "mltools"]
    p = subprocess.run(exe + ["elf", "trace", "--json", "--", "/bin/echo", "hello"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert json.loads(p.stdout)["schema"] == "mltools.elf.trace"
    assert "hello" in p.stderr
    report = tmp_path / "r.json"
    p = subprocess.run(exe + ["elf", "trace", "--json", "--report", str(report), "--", "/bin/echo", "hello"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "hello\n"
    assert json.loads(report.read_text())["programs"][0]["name"] == "/bin/echo"


# ---------------------------------------------------------------------------
# Bad input and targets ld.so does not trace

def test_command_not_found_is_127_with_one_line(cli):
    res = cli("elf", "trace", "--", "no-such-command-xyz")
    assert res.exit_code == 127 and res.stdout == ""
    assert res.stderr.strip() == "Error: no-such-command-xyz: command not found"
    res = cli("elf", "trace", "--", "./no/such/file")
    assert res.exit_code == 127


def test_not_executable_is_126(cli, tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    res = cli("elf", "trace", "--", str(f))
    assert res.exit_code == 126 and res.stderr.strip().endswith("Permission denied")


def test_usage_errors_are_125(cli):
    res = cli("elf", "trace", "--categories", "reloc", "--", "/bin/true")
    assert res.exit_code == 125 and "unknown LD_DEBUG category" in res.stderr
    assert cli("elf", "trace").exit_code == 125


@needs_gcc
def test_static_binary_is_said(cli, tmp_path):
    src = tmp_path / "s.c"
    src.write_text("int main(void){return 7;}\n")
    proc = subprocess.run([GCC, "-static", "-o", str(tmp_path / "s"), str(src)], capture_output=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip("no static libc (libc.a)")
    res = cli("elf", "trace", "--json", "--", str(tmp_path / "s"))
    assert res.exit_code == 7
    doc = res.json()
    assert doc["target"]["kind"] == "static" and doc["programs"] == []
    assert "STATIC_BINARY" in _codes(doc)
    text = cli("elf", "trace", "--", str(tmp_path / "s")).stdout
    assert "statically linked" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a set-user-ID copy")
def test_setuid_binary_is_said(cli, tmp_path):
    import pwd

    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user nobody")
    exe = tmp_path / "suid_true"
    shutil.copy("/bin/true", exe)
    os.chown(exe, nobody, -1)
    os.chmod(exe, 0o4755)
    tmp_path.chmod(0o755)
    res = cli("elf", "trace", "--json", "--", str(exe))
    assert res.exit_code == 0
    doc = res.json()
    assert doc["target"]["secure_mode"]
    assert "SECURE_MODE" in _codes(doc)
    # the oracle: ld.so really wrote nothing for it
    assert doc["processes"] == 0


# ---------------------------------------------------------------------------
# The parser on its own

def test_parser_keeps_unknown_lines():
    lines = [
        "      5:\tfile=libc.so.6 [0];  needed by ./x [0]\n",
        "      5:\tfind library=libc.so.6 [0]; searching\n",
        "      5:\t search cache=/etc/ld.so.cache\n",
        "      5:\t  trying file=/lib/x86_64-linux-gnu/libc.so.6\n",
        "      5:\t\n",
        "      5:\tfile=libc.so.6 [0];  generating link map\n",
        "      5:\tsomething new in a later glibc\n",
        "      5:\tinitialize program: ./x\n",
        "      5:\ttransferring control: ./x\n",
    ]
    (prog,) = lddebug.parse_pid_lines(5, lines)
    assert prog.name == "./x" and prog.started
    assert prog.libraries[0].path == "/lib/x86_64-linux-gnu/libc.so.6"
    assert prog.unparsed_count == 1 and prog.unparsed == ["something new in a later glibc"]
    assert prog.line_count == 8


def test_categories():
    assert lddebug.parse_categories("libs") == ("libs", "files")
    assert lddebug.parse_categories("bindings") == ("libs", "files", "bindings")
    assert lddebug.parse_categories("all") == lddebug.CATEGORIES
    with pytest.raises(ValueError):
        lddebug.parse_categories("symbols")


def test_failed_dlopen_is_reported_with_its_caller(cli):
    code = "import ctypes\ntry:\n    ctypes.CDLL('libmltools-no-such-lib.so.12')\nexcept OSError as e:\n    print(e)\n"
    real = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "libmltools-no-such-lib.so.12: cannot open shared object file" in real.stdout
    res = cli("elf", "trace", "--json", "--", sys.executable, "-c", code)
    assert res.exit_code == 0
    doc = res.json()
    (lib,) = [lib for p in doc["programs"] for lib in p["libraries"]
              if lib["name"] == "libmltools-no-such-lib.so.12"]
    assert lib["how"] == "dlopen" and lib["path"] is None and not lib["at_startup"]
    assert "_ctypes" in lib["requested_by"]
    assert "DLOPEN_FAILED" in _codes(doc) and "MISSING" not in _codes(doc)


def test_two_copies_of_a_runtime(cli, tmp_path):
    gomp = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    if not os.path.exists(gomp):
        pytest.skip("no system libgomp")
    vendored = tmp_path / "libgomp-a34b3233.so.1.0.0"
    shutil.copy(gomp, vendored)
    code = f"import ctypes; ctypes.CDLL('libgomp.so.1'); ctypes.CDLL('{vendored}')"
    res = cli("elf", "trace", "--json", "--", sys.executable, "-c", code)
    assert res.exit_code == 0
    (dup,) = [f for f in res.json()["findings"] if f["code"] == "DUP_RUNTIME"]
    assert dup["details"]["paths"][1] == str(vendored)


def test_report_file_that_cannot_be_written_is_refused_before_running(cli, tmp_path):
    marker = tmp_path / "ran"
    res = cli("elf", "trace", "--report", str(tmp_path / "no" / "dir" / "r.txt"), "--",
              "/bin/sh", "-c", f"touch {marker}")
    assert res.exit_code == 125 and not marker.exists()


def test_forked_child_lines_in_the_parents_file(cli, tmp_path):
    code = ("import os, ctypes\npid = os.fork()\nif pid == 0:\n    ctypes.CDLL('libz.so.1')\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\n")
    raw = tmp_path / "raw"
    res = cli("elf", "trace", "--json", "--keep", str(raw), "--", sys.executable, "-c", code)
    assert res.exit_code == 0
    doc = res.json()
    _check_counts(doc, raw)
    (child,) = [p for p in doc["programs"] if p["forked_from"] is not None]
    parent = next(p for p in doc["programs"] if p["pid"] == child["forked_from"])
    assert child["pid"] != parent["pid"] and child["name"] == parent["name"]
    assert any(lib["name"] == "libz.so.1" and lib["how"] == "dlopen" for lib in child["libraries"])
    assert not any(lib["name"] == "libz.so.1" for lib in parent["libraries"])


def test_failed_dlopen_of_an_extension_is_rolled_back(cli, fx, tmp_path):
    """ctypes loads libu.so (undefined baz) with RTLD_NOW: ld.so reports the
    symbol error, destroys the link map, and Python raises OSError."""
    lib = fx["m3"].parent / "u1" / "libu.so"
    code = f"import ctypes, os\ntry:\n    ctypes.CDLL('{lib}', mode=os.RTLD_NOW)\nexcept OSError as e:\n    print(e)\n"
    real = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "undefined symbol: baz" in real.stdout
    res = cli("elf", "trace", "--json", "--", sys.executable, "-c", code)
    assert res.exit_code == 0
    doc = res.json()
    assert doc["unparsed_count"] == 0
    (prog,) = doc["programs"]
    assert str(lib) in prog["unloaded"]
    (err,) = prog["errors"]
    assert err["object"] == str(lib) and err["message"] == "undefined symbol: baz"
