"""mltools cython check over many files: the report does not depend on -j or on
the order of the files, a file that cannot be checked is reported and the
others go on, includes that do not exist, pure-Python mode, progress, and real
SIGINT/SIGTERM to a run with worker processes.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mltools.cythoncheck import CheckSettings, check_paths
from mltools.errors import InputError

CASES = Path(__file__).resolve().parent / "cython_cases"

# A package whose .pyx defines fused functions its .pxd declares, and a module
# that cimports it and sorts first: checked in one Cython context, the .pyx used
# to be analysed into the .pxd scope the earlier file had loaded, and lost the
# fused functions' arguments.
BLAS_PXD = """\
from cython cimport floating

cdef floating first(int, const floating*) noexcept nogil
"""
BLAS_PYX = """\
from cython cimport floating

cdef floating first(int n, const floating* x) noexcept nogil:
    if n > 0:
        return x[0]
    return 0


def total(double[:] v):
    return first(v.shape[0], &v[0])


def address(allocator):
    block = allocator(16)
    return <size_t><void*>block.ptr
"""
USER_PYX = """\
from pkg.blas cimport first


def head(double[::1] v):
    return first(v.shape[0], &v[0])
"""


def _report_key(report):
    return ([(f.path, f.line, f.col, f.code, f.severity, f.verified, f.message) for f in report.findings],
            [str(e) for e in report.errors], list(report.notes), report.files_checked)


@pytest.fixture()
def fused_project(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "blas.pxd").write_text(BLAS_PXD)
    (pkg / "blas.pyx").write_text(BLAS_PYX)
    (pkg / "a_user.pyx").write_text(USER_PYX)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_module_checked_after_a_file_that_cimports_it_keeps_its_declarations(fused_project):
    alone = check_paths(["pkg/blas.pyx"], CheckSettings(jobs=1))
    assert not alone.notes
    assert [(f.line, f.code, f.severity.value, f.verified) for f in alone.findings] == \
        [(10, "CYP006", "warning", True), (15, "CYP001", "error", True)]
    after_user = check_paths(["pkg/a_user.pyx", "pkg/blas.pyx"], CheckSettings(jobs=1))
    assert [f for f in after_user.findings if f.path.endswith("blas.pyx")] == list(alone.findings)
    assert not after_user.notes


def test_the_report_does_not_depend_on_jobs_or_order(fused_project):
    (fused_project / "pkg" / "z_other.pyx").write_text(USER_PYX.replace("head", "tail"))
    reports = [check_paths(["pkg"], CheckSettings(jobs=j)) for j in (1, 2, 3)]
    reports.append(check_paths(["pkg/z_other.pyx", "pkg/blas.pyx", "pkg/a_user.pyx", "pkg/blas.pxd"],
                               CheckSettings(jobs=1)))
    first = _report_key(reports[0])
    assert all(_report_key(r) == first for r in reports[1:])


def test_errors_of_a_cimported_pxd_mark_every_file_that_cimports_it(tmp_path, monkeypatch):
    # Cython reports a .pxd's errors only while loading it (for the first file that
    # cimports it); the check charges them to every file that cimports it.
    (tmp_path / "shared.pxd").write_text("from not_installed_pkg cimport Thing\n")
    for name in ("a.pyx", "b.pyx"):
        (tmp_path / name).write_text("cimport shared\n\ndef f():\n    m = make()\n    return <size_t><void*>m.ptr\n"
                                     "\ndef make():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    for jobs in (1, 2):
        report = check_paths(["a.pyx", "b.pyx"], CheckSettings(jobs=jobs))
        assert [(f.path, f.code, f.severity.value, f.verified) for f in report.findings] == \
            [("a.pyx", "CYP001", "warning", False), ("b.pyx", "CYP001", "warning", False)]
        assert report.notes[0].startswith("2 file(s) use declarations Cython could not resolve "
                                          "(first: shared.pxd:1:1: 'not_installed_pkg.pxd' not found)")


def test_a_missing_include_still_gets_the_typed_check(tmp_path):
    # scikit-learn's _cython_blas.pyx includes _blas_int.pxi, which its build generates.
    src = tmp_path / "blas_user.pyx"
    src.write_text('include "_blas_int.pxi"\n\ndef f(buf):\n    return <size_t><void*>buf.ptr\n')
    report = check_paths([str(src)])
    assert [(f.line, f.code, f.severity.value) for f in report.findings] == [(4, "CYP001", "error")]
    assert len(report.notes) == 1 and "'_blas_int.pxi' not found" in report.notes[0]
    assert "type analysis failed" not in report.notes[0]


def test_one_unparsable_file_of_many_is_an_error_at_its_line(cli, tmp_path):
    (tmp_path / "good.pyx").write_text("def f(buf):\n    return <size_t><void*>buf.ptr\n")
    (tmp_path / "env.pyx").write_text((CASES / "broken" / "needs_env.pyx").read_text())
    (tmp_path / "syntax.pyx").write_text((CASES / "broken" / "bad_syntax.pyx").read_text())
    res = cli("cython", "check", "--json", str(tmp_path))
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert [(Path(f["path"]).name, f["code"]) for f in doc["findings"]] == [("good.pyx", "CYP001")]
    errors = {Path(e["path"]).name: e for e in doc["errors"]}
    assert set(errors) == {"env.pyx", "syntax.pyx"} and doc["files_checked"] == 3
    env = errors["env.pyx"]
    assert (env["line"], env["col"]) == (1, 4)
    assert "Compile-time name 'WITH_HANDLES' not defined (pass -E WITH_HANDLES=VALUE" in env["message"]
    assert env["message"].startswith(env["path"] + ":1:4: Cython cannot parse it: ")
    text = cli("cython", "check", "--fail-on", "none", str(tmp_path))
    assert text.exit_code == 1        # an unchecked file is never "all well"
    assert any(l.endswith("syntax.pyx:4:1: Cython cannot parse it: Expected an identifier or literal")
               for l in text.stdout.splitlines())
    assert text.stdout.splitlines()[-1] == "checked 3 files: 1 error; 2 files could not be checked"
    gh = cli("cython", "check", "--format", "github", str(tmp_path))
    assert any(l.startswith("::error file=") and "env.pyx,line=1,col=4,title=not checked::" in l
               for l in gh.stdout.splitlines())


def test_a_pxd_that_does_not_parse_names_the_file_that_needs_it(tmp_path, monkeypatch):
    # CuPy without its -E names: the error is in the module's .pxd; the .pyx is what was not checked.
    (tmp_path / "driver.pxd").write_text("IF USE_CUDA_PYTHON:\n    cdef int x\n")
    (tmp_path / "driver.pyx").write_text("def f(buf):\n    return <size_t><void*>buf.ptr\n")
    (tmp_path / "other.pyx").write_text("def g(buf):\n    return <size_t><void*>buf.ptr\n")
    monkeypatch.chdir(tmp_path)
    report = check_paths(["."])
    assert [(e.path, e.line, e.col, e.message) for e in report.errors] == [
        ("driver.pxd", 1, 4, "driver.pxd:1:4: Cython cannot parse it: Compile-time name 'USE_CUDA_PYTHON' "
                             "not defined (pass -E USE_CUDA_PYTHON=VALUE, as the project's build does)"),
        ("driver.pyx", 0, 0, "driver.pyx: Cython cannot parse driver.pxd:1:4, which it needs: Compile-time name "
                             "'USE_CUDA_PYTHON' not defined (pass -E USE_CUDA_PYTHON=VALUE, as the project's "
                             "build does)")]
    assert [(f.path, f.code) for f in report.findings] == [("other.pyx", "CYP001")]


def test_exit_2_only_when_no_file_could_be_checked(cli, tmp_path):
    (tmp_path / "env.pyx").write_text((CASES / "broken" / "needs_env.pyx").read_text())
    (tmp_path / "syntax.pyx").write_text((CASES / "broken" / "bad_syntax.pyx").read_text())
    res = cli("cython", "check", str(tmp_path))
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("Error: none of the 2 files could be processed: ")
    with pytest.raises(InputError):
        check_paths([str(tmp_path / "nope.pyx"), str(tmp_path / "env.pyx")])
    res = cli("cython", "check", "--json", str(tmp_path / "nope.pyx"), str(CASES / "rules" / "cyp003_good.pyx"))
    assert res.exit_code == 1 and res.json()["errors"][0]["message"].endswith("nope.pyx: no such file or directory")


def test_a_worker_that_dies_costs_only_its_file(tmp_path, monkeypatch):
    from mltools.cythoncheck import check as check_mod

    for i in range(6):
        (tmp_path / f"m{i}.pyx").write_text("def f(buf):\n    return <size_t><void*>buf.ptr\n")
    real = check_mod._Checker.check

    def check(self, path):
        if path.endswith("m3.pyx"):
            os._exit(3)          # what a crash inside Cython looks like from the parent
        return real(self, path)

    monkeypatch.setattr(check_mod._Checker, "check", check)   # inherited by the forked workers
    report = check_paths([str(tmp_path)], CheckSettings(jobs=2))
    assert [e.path.endswith("m3.pyx") and e.message.endswith("the process checking it ended (exit status 3)")
            for e in report.errors] == [True]
    assert sorted(Path(f.path).name for f in report.findings) == [f"m{i}.pyx" for i in (0, 1, 2, 4, 5)]


def test_pure_python_mode_files_are_found_and_typed(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    # Pure-Python mode: cython.cast of an untyped object's int attribute.
    (pkg / "pure.py").write_text("import cython\n\n\ndef attach(block):\n"
                                 "    return cython.cast(cython.size_t, cython.cast(cython.p_void, block.ptr))\n")
    # The augmenting .pxd makes `p` a char*: the cast to long keeps a pointer only with its types.
    (pkg / "augmented.py").write_text("import cython\n\n\nclass Reader:\n    def feed(self, data):\n        p = data\n"
                                      "        return cython.cast(cython.long, p)\n")
    (pkg / "augmented.pxd").write_text("cimport cython\n\ncdef class Reader:\n"
                                       "    @cython.locals(p='const char *')\n    cpdef long feed(self, bytes data)\n")
    (pkg / "declared.py").write_text("def twice(x):\n    return 2 * x\n")  # Cython by its .pxd alone
    (pkg / "declared.pxd").write_text("cpdef int twice(int x)\n")
    (pkg / "plain.py").write_text("def f(x):\n    return x\n")            # not Cython: left out
    (pkg / "__init__.py").write_text("")
    report = check_paths([str(pkg)])
    assert report.files_checked == 5 and not report.errors and not report.notes   # not plain.py, __init__.py
    assert [(Path(f.path).name, f.line, f.code) for f in report.findings] == \
        [("augmented.py", 7, "CYP010"), ("pure.py", 5, "CYP001")]


def test_progress_is_reported_per_file(fused_project):
    calls = []
    check_paths(["pkg"], CheckSettings(jobs=2), progress=lambda done, total, detail: calls.append((done, total, detail)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert sorted(c[2] for c in calls) == ["pkg/a_user.pyx", "pkg/blas.pxd", "pkg/blas.pyx"]


def _python_env():
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))


def test_progress_line_on_a_terminal_only(fused_project):
    from terminal import run_on_terminal

    proc, err = run_on_terminal(["cython", "check", "--json", "-j", "1", "pkg"], env=_python_env())
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["files_checked"] == 3            # stdout: only the document
    assert "cython check: 3/3 (100%)" in err


def _tree_of_files(root: Path, n: int) -> Path:
    for i in range(n):
        (root / f"mod{i:03d}.pyx").write_text(
            "cimport numpy as cnp\n\n" + "".join(f"def f{j}(buf):\n    return <size_t><void*>buf.ptr\n\n" for j in range(40)))
    return root


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_workers_and_reports_what_was_done(tmp_path, sig, status):
    _tree_of_files(tmp_path, 200)     # minutes of work: the signal lands while files are being checked
    proc = subprocess.Popen([sys.executable, "-m", "mltools", "cython", "check", "--json", "-j", "2", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_python_env(),
                            start_new_session=True)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = psutil.Process(proc.pid).children()
        time.sleep(0.05)
    assert len(workers) == 2, "the workers never started"
    time.sleep(1.0)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)         # Ctrl-C reaches the whole foreground group
    else:
        proc.send_signal(sig)            # kill(1) reaches only the parent
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "Aborted" not in err
    doc = json.loads(out)
    assert doc["interrupted"] is True and doc["files_checked"] < 200
    assert all(not w.is_running() or w.status() == psutil.STATUS_ZOMBIE for w in workers)
