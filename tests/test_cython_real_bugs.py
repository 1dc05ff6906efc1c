"""The corpus of real fixed bugs: for each fix commit of a public Cython project,
a minimal snippet of the pattern before the fix (``*_bad``) and after it
(``*_good``), in tests/cython_cases/real/. The expected findings are written
on the lines (``# expect: CODE@COL``, ``# expect-typed:``); every good file
must be quiet. The provenance (project, commit, file) is in docs/cython.md,
which a test below keeps in step with the corpus.

The oracle for "this is real Cython that the compiler lets through" is
Cython's own compiler: every snippet, bad and good, compiles with ``cython``.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mltools.cythoncheck import CheckSettings, check_paths

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "cython_cases" / "real"
REJECTED = ROOT / "tests" / "cython_cases" / "rejected"
_EXPECT = re.compile(r"#\s*expect(?:-(typed|syntax))?:\s*((?:CYP\d+@\d+\s*)+)")


def expected(mode):
    out = set()
    for p in sorted(REAL.iterdir()):
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            m = _EXPECT.search(line)
            if m and m.group(1) in (None, mode):
                for item in m.group(2).split():
                    code, col = item.split("@")
                    out.add((p.name, lineno, int(col), code))
    return out


def found(report):
    return {(Path(f.path).name, f.line, f.col, f.code) for f in report.findings}


def _cases():
    return sorted({p.name.rsplit("_", 1)[0] for p in REAL.glob("*_bad.*")})


def test_corpus_has_eight_real_bugs_or_more():
    cases = _cases()
    assert len(cases) >= 8
    for case in cases:
        assert list(REAL.glob(f"{case}_good.*")), f"{case} has no fixed version"


@pytest.fixture(scope="module")
def typed_report():
    return check_paths([str(REAL)], CheckSettings(cplus=False))


def test_every_bad_snippet_is_flagged_and_every_fix_is_quiet(typed_report):
    assert not typed_report.errors and not typed_report.notes
    assert found(typed_report) == expected("typed")
    flagged = {name.rsplit("_", 1)[0] for name, *_ in found(typed_report)}
    # .pxi findings are named after the include, which carries the case's name too
    assert flagged == set(_cases())
    assert not any("_good." in f.path for f in typed_report.findings)
    assert all(f.verified for f in typed_report.findings)


def test_syntax_mode_finds_what_the_file_alone_shows():
    report = check_paths([str(REAL)], CheckSettings(types=False))
    assert found(report) == expected("syntax")


def test_each_case_alone_gives_the_same_findings(typed_report):
    # Checked one at a time (a fresh run each), a case finds what it finds in the corpus run.
    together = found(typed_report)
    for bad in sorted(REAL.glob("*_bad.py*")):
        alone = found(check_paths([str(bad)]))
        assert alone == {f for f in together if f[0].rsplit(".", 1)[0] == bad.name.rsplit(".", 1)[0]}, bad.name


def _cython_compiler():
    exe = shutil.which("cython", path=str(Path(sys.executable).parent)) or shutil.which("cython")
    if exe is None:
        pytest.skip("Cython's command-line compiler is not installed")
    return exe


def _compile(exe, sources, cplus=False):
    """Cython's compiler on ``sources`` (copies; the C files land beside them), one process."""
    argv = [exe, "-3", *(["--cplus"] if cplus else []), *map(str, sources)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def test_cython_compiles_every_snippet_without_a_word(tmp_path):
    """Cython's compiler accepts every bad snippet (and its fix): these bugs compile."""
    exe = _cython_compiler()
    shutil.copytree(REAL, tmp_path / "real")
    sources = sorted(p for p in (tmp_path / "real").iterdir() if p.suffix in (".pyx", ".py"))
    for cplus in (False, True):
        group = [p for p in sources if ("language = c++" in p.read_text()) == cplus]
        res = _compile(exe, group, cplus)
        assert res.returncode == 0, res.stderr
        assert all(p.with_suffix(".cpp" if cplus else ".c").exists() for p in group)


def test_what_cython_rejects_is_reported_not_swallowed(tmp_path):
    src = tmp_path / "direct_store.pyx"
    shutil.copy(REJECTED / "direct_store.pyx", src)
    res = _compile(_cython_compiler(), [src])
    assert res.returncode != 0 and "Storing unsafe C derivative of temporary Python reference" in res.stderr
    line = int(re.search(r"direct_store\.pyx:(\d+):", res.stderr).group(1))
    report = check_paths([str(REJECTED / "direct_store.pyx")])
    assert [(f.line, f.code, f.severity.value) for f in report.findings] == [(line, "CYP020", "error")]
    assert "Cython rejects this: Storing unsafe C derivative" in report.findings[0].message


def test_docs_name_the_project_and_commit_of_every_case():
    text = (ROOT / "docs" / "cython.md").read_text()
    for case in _cases():
        project, sha = case.rsplit("_", 1)
        assert re.search(rf"`{case}`", text), f"docs/cython.md does not list {case}"
        assert sha in text
