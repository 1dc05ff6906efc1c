"""mltools cython check: the rule corpus (expected code, line and col in each
file), exit codes, options, configuration and output formats.

The corpus in tests/cython_cases/rules has a bad and a good file per rule; the
expected findings are written on the lines as `# expect: CODE@COL` (both modes),
`# expect-typed:` or `# expect-syntax:`. Typed mode runs over the whole corpus
once (one shared Cython Context), syntax mode once.
"""
import json
import re
from pathlib import Path

import pytest

from mltools.cythoncheck import RULES, CheckSettings, check_paths
from mltools.cythoncheck.check import _suppressed, find_sources
from mltools.findings import Severity

CASES = Path(__file__).resolve().parent / "cython_cases"
RULES_DIR = CASES / "rules"
_EXPECT = re.compile(r"#\s*expect(?:-(typed|syntax))?:\s*((?:CYP\d+@\d+\s*)+)")


def expected(mode):
    out = set()
    for p in sorted(RULES_DIR.iterdir()):
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            m = _EXPECT.search(line)
            if m and m.group(1) in (None, mode):
                for item in m.group(2).split():
                    code, col = item.split("@")
                    out.add((p.name, lineno, int(col), code))
    return out


def found(report):
    return {(Path(f.path).name, f.line, f.col, f.code) for f in report.findings}


@pytest.fixture(scope="module")
def typed_report():
    return check_paths([str(RULES_DIR)])


@pytest.fixture(scope="module")
def syntax_report():
    return check_paths([str(RULES_DIR)], CheckSettings(types=False))


def test_corpus_typed_mode(typed_report):
    assert not typed_report.errors
    assert len(typed_report.notes) == 1 and typed_report.notes[0].startswith(
        "1 file(s) use declarations Cython could not resolve (first: ") and \
        "cyp000_unresolved.pyx:2:1: 'not_installed_pkg.pxd' not found" in typed_report.notes[0]
    assert typed_report.files_checked == len(find_sources([str(RULES_DIR)]))
    assert found(typed_report) == expected("typed")


def test_corpus_syntax_mode(syntax_report):
    assert not syntax_report.errors
    assert found(syntax_report) == expected("syntax")


def test_every_rule_has_bad_and_good_cases():
    exp = expected("typed") | expected("syntax")
    for code in RULES:
        assert any(c == code for _, _, _, c in exp), f"no bad case for {code}"
        if code != "CYP000":
            assert (RULES_DIR / f"{code.lower()}_good.pyx").exists()
            bad = {f for f, _, _, c in exp if c == code}
            assert f"{code.lower()}_bad.pyx" in bad


def test_rule_table_matches_the_contract():
    contract = {"CYP000": "info", "CYP001": "error", "CYP002": "error", "CYP003": "warning",
                "CYP004": "warning", "CYP005": "warning", "CYP006": "warning", "CYP007": "warning",
                "CYP010": "warning", "CYP011": "warning", "CYP013": "warning", "CYP014": "warning",
                "CYP015": "warning", "CYP020": "error"}
    assert {c: r.severity.value for c, r in RULES.items()} == contract
    assert all(r.fix and r.title for r in RULES.values())


def test_severities_and_verification(typed_report):
    by_key = {(Path(f.path).name, f.line, f.code): f for f in typed_report.findings}
    # Rules keep their table severity when the types resolved.
    for f in typed_report.findings:
        if Path(f.path).name != "cyp000_unresolved.pyx":
            assert f.severity == RULES[f.code].severity and f.verified, f
    # With an unresolved cimport: CYP000 is info and unverified; an untyped
    # parameter is still an error; a local whose type may depend on the
    # missing declarations is downgraded to an unverified warning.
    assert by_key[("cyp000_unresolved.pyx", 6, "CYP000")].severity == Severity.INFO
    assert not by_key[("cyp000_unresolved.pyx", 6, "CYP000")].verified
    f = by_key[("cyp000_unresolved.pyx", 12, "CYP001")]
    assert f.severity == Severity.ERROR and f.verified
    f = by_key[("cyp000_unresolved.pyx", 19, "CYP001")]
    assert f.severity == Severity.WARNING and not f.verified


def test_findings_in_include_and_pxd_name_their_file(typed_report):
    paths = {Path(f.path).name for f in typed_report.findings}
    assert "included_helpers.pxi" in paths and "inline_helpers.pxd" in paths


def test_messages_name_the_expression_and_fix(typed_report):
    f = next(f for f in typed_report.findings if f.code == "CYP001" and "buf.ptr" in f.message)
    assert "<void*>buf.ptr" in f.message and "uintptr_t" in f.fix
    assert f.finding.code == "CYP001" and f.finding.details["line"] == f.line


def test_noqa_parsing():
    assert _suppressed("x = 1  # noqa", "CYP001")
    assert _suppressed("x = 1  # noqa: CYP001", "CYP001")
    assert _suppressed("x = 1  # noqa: CYP004, CYP001", "CYP001")
    assert not _suppressed("x = 1  # noqa: CYP004", "CYP001")
    assert not _suppressed("x = 1  # expect: CYP001@3", "CYP001")


def test_noqa_suppresses(tmp_path):
    src = "def f(buf):\n    cdef void* p = <void*>buf.ptr{}\n    return <size_t>p\n"
    (tmp_path / "a.pyx").write_text(src.format(""))
    (tmp_path / "b.pyx").write_text(src.format("  # noqa: CYP001"))
    (tmp_path / "c.pyx").write_text(src.format("  # noqa: CYP004"))
    r = check_paths([str(tmp_path)])
    assert sorted(Path(f.path).name for f in r.findings) == ["a.pyx", "c.pyx"]


def test_directory_walk_skips_build_dirs_and_venvs(tmp_path):
    code = "def f(x):\n    return <size_t><void*>x.ptr\n"
    for rel in ["pkg/a.pyx", "pkg/b.pxd", "build/lib/c.pyx", ".venv/d.pyx", "env1/e.pyx",
                "pkg/x.egg-info/f.pyx", "notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(code if rel.endswith(".pyx") else "")
    (tmp_path / "env1" / "pyvenv.cfg").write_text("home = /usr\n")
    files = sorted(Path(p).relative_to(tmp_path).as_posix() for p in find_sources([str(tmp_path)]))
    assert files == ["pkg/a.pyx", "pkg/b.pxd"]


# --- the command --------------------------------------------------------------

def test_cli_text_output_and_exit_1(cli):
    res = cli("cython", "check", str(RULES_DIR / "cyp001_bad.pyx"))
    assert res.exit_code == 1, res.stderr
    first = res.stdout.splitlines()[0]
    assert re.match(r".*cyp001_bad\.pyx:8:20: CYP001 error: <void\*>buf\.ptr .*\(fix: .*\)$", first)
    assert res.stdout.splitlines()[-1] == "checked 1 file: 8 errors"
    assert res.stderr == ""


def test_cli_json_schema_exactly(cli):
    res = cli("cython", "check", "--format", "json", str(RULES_DIR / "cyp003_bad.pyx"))
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert list(doc) == ["schema", "version", "findings", "errors", "files_checked", "interrupted"]
    assert doc["schema"] == "mltools.cython.check" and doc["version"] == 2 and doc["files_checked"] == 1
    assert doc["errors"] == [] and doc["interrupted"] is False
    f = doc["findings"][0]
    assert list(f) == ["path", "line", "col", "code", "severity", "message", "fix", "verified"]
    assert (f["line"], f["col"], f["code"], f["severity"], f["verified"]) == (6, 17, "CYP003", "warning", True)
    assert json.loads(cli("cython", "check", "--json", str(RULES_DIR / "cyp003_bad.pyx")).stdout) == doc


def test_cli_github_format(cli):
    res = cli("cython", "check", "--format", "github", str(RULES_DIR / "cyp000_unresolved.pyx"))
    lines = res.stdout.splitlines()
    assert res.exit_code == 1
    assert lines[0].startswith("::notice file=") and ",line=6,col=20,title=CYP000::CYP000 " in lines[0]
    assert any(l.startswith("::error file=") and "line=12,col=20" in l for l in lines)
    assert any(l.startswith("::warning file=") and "line=19,col=20" in l for l in lines)


def test_cli_fail_on(cli):
    warn_only = str(RULES_DIR / "cyp003_bad.pyx")
    assert cli("cython", "check", warn_only).exit_code == 1
    assert cli("cython", "check", "--fail-on", "error", warn_only).exit_code == 0
    info_only = str(CASES / "missing_cimport.pyx")
    res = cli("cython", "check", info_only)
    assert res.exit_code == 0 and "CYP000 info" in res.stdout
    assert re.fullmatch(r"warning: 1 file\(s\) use declarations Cython could not resolve \(first: \S*missing_cimport"
                        r"\.pyx:1:1: 'not_installed_pkg\.pxd' not found\); .*\n", res.stderr)
    assert cli("cython", "check", "--fail-on", "info", info_only).exit_code == 1


def test_cli_select_and_ignore(cli):
    path = str(RULES_DIR / "cyp000_unresolved.pyx")
    codes = lambda res: {f["code"] for f in res.json()["findings"]}   # noqa: E731
    assert codes(cli("cython", "check", "--json", path)) == {"CYP000", "CYP001"}
    assert codes(cli("cython", "check", "--json", "--select", "CYP000", path)) == {"CYP000"}
    assert codes(cli("cython", "check", "--json", "--ignore", "CYP001,CYP000", path)) == set()
    assert codes(cli("cython", "check", "--json", "--select", "CYP00", "--ignore", "CYP000", path)) == {"CYP001"}
    res = cli("cython", "check", "--select", "CYP999", path)
    assert res.exit_code == 2 and "unknown rule code 'CYP999'" in res.stderr


def test_cli_parse_error_exit_2(cli):
    res = cli("cython", "check", str(CASES / "broken" / "bad_syntax.pyx"))
    assert res.exit_code == 2 and res.stdout == ""
    assert re.fullmatch(r"Error: .*bad_syntax\.pyx:4:1: Cython cannot parse it: Expected an identifier or literal\n",
                        res.stderr)


def test_cli_compile_time_env(cli):
    path = str(CASES / "broken" / "needs_env.pyx")
    res = cli("cython", "check", path)
    assert res.exit_code == 2 and "Compile-time name 'WITH_HANDLES' not defined" in res.stderr
    res = cli("cython", "check", "--json", "-E", "WITH_HANDLES=1", path)
    assert res.exit_code == 1
    assert [(f["line"], f["code"]) for f in res.json()["findings"]] == [(3, "CYP001")]
    assert cli("cython", "check", "-E", "WITH HANDLES", path).exit_code == 2


def test_cli_include_dir_resolves_the_cimport(cli):
    user = str(CASES / "project" / "src" / "user.pyx")
    res = cli("cython", "check", "--json", user)
    assert res.exit_code == 0 and [f["code"] for f in res.json()["findings"]] == ["CYP000"]
    res = cli("cython", "check", "--json", "-I", str(CASES / "project" / "decls"), user)
    assert res.exit_code == 0 and res.json()["findings"] == []   # m.ptr is a C intptr_t: right
    assert cli("cython", "check", "-I", str(CASES / "nowhere"), user).exit_code == 2


def test_cli_cplus(cli):
    path = str(CASES / "project" / "src" / "cpp_user.pyx")
    res = cli("cython", "check", "--json", "--cplus", path)
    assert res.exit_code == 1 and [f["code"] for f in res.json()["findings"]] == ["CYP001"]


def test_cli_missing_path_exit_2(cli, tmp_path):
    res = cli("cython", "check", str(tmp_path / "nope.pyx"))
    assert res.exit_code == 2 and "no such file or directory" in res.stderr and res.stdout == ""


def test_cython_chatter_does_not_leak(cli):
    # Cython warns about this file when compiling it; the check prints only its result.
    res = cli("cython", "check", str(CASES / "chatter.pyx"))
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout == "checked 1 file: no findings\n"


def test_pyproject_configuration(cli, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mltools.cython]\ninclude-dirs = ["decls"]\ncompile-time-env = { WITH_HANDLES = 1 }\n'
        'ignore = ["CYP004"]\nfail-on = "error"\n')
    (tmp_path / "decls").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "decls" / "memdecl.pxd").write_text((CASES / "project/decls/memdecl.pxd").read_text())
    (tmp_path / "src" / "user.pyx").write_text((CASES / "project/src/user.pyx").read_text())
    (tmp_path / "src" / "env.pyx").write_text((CASES / "broken/needs_env.pyx").read_text())
    (tmp_path / "src" / "w.pyx").write_text("def f(o):\n    return <size_t><void*>o\n")
    res = cli("cython", "check", "--json", str(tmp_path / "src"))
    # include-dirs resolved memdecl; the env made env.pyx parse; CYP004 ignored.
    assert [(Path(f["path"]).name, f["code"]) for f in res.json()["findings"]] == [("env.pyx", "CYP001")]
    assert res.exit_code == 1
    # --ignore on the command line replaces the configured list; fail-on stays "error".
    res = cli("cython", "check", "--ignore", "CYP000", "--json", str(tmp_path / "src" / "w.pyx"))
    assert res.exit_code == 0 and [f["code"] for f in res.json()["findings"]] == ["CYP004"]
    res = cli("cython", "check", "--fail-on", "warning", str(tmp_path / "src" / "w.pyx"), "--ignore", "CYP000")
    assert res.exit_code == 1
    (tmp_path / "pyproject.toml").write_text('[tool.mltools.cython]\nbogus = 1\n')
    res = cli("cython", "check", str(tmp_path / "src"))
    assert res.exit_code == 2 and "unknown key(s) bogus" in res.stderr


def test_analysis_failure_falls_back_to_syntax_mode(cli, monkeypatch):
    from mltools.cythoncheck import typed

    def boom(path, pool):
        raise AttributeError("a Cython internal changed")

    monkeypatch.setattr(typed, "check_file_typed", boom)
    res = cli("cython", "check", "--json", str(RULES_DIR / "cyp002_bad.pyx"))
    assert res.exit_code == 1
    assert "Cython's type analysis failed (AttributeError" in res.stderr and "checked without types" in res.stderr
    assert {f["code"] for f in res.json()["findings"]} == {"CYP002"}


def test_no_types_option(cli):
    path = str(RULES_DIR / "cyp001_good.pyx")
    assert cli("cython", "check", path).exit_code == 0
    res = cli("cython", "check", "--no-types", "--json", path)
    # Without Cython's inference `m = Memory()` is unknown: an unverified warning.
    assert [(f["line"], f["code"], f["severity"], f["verified"]) for f in res.json()["findings"]] == \
        [(38, "CYP001", "warning", False)]


def test_fatal_cython_error_falls_back_with_a_note(cli):
    # Cython stops in a transform before type analysis: say so, check without types.
    res = cli("cython", "check", "--json", str(CASES / "broken" / "stops_analysis.pyx"))
    assert res.exit_code == 1
    assert re.search(r"stops_analysis\.pyx: Cython stopped at .*stops_analysis\.pyx:4:\d+: The freelist "
                     r"directive .*; checked without types", res.stderr)
    assert [(f["line"], f["code"]) for f in res.json()["findings"]] == [(10, "CYP001")]


def test_included_fragments_are_checked_through_their_includer(tmp_path):
    (tmp_path / "main.pyx").write_text('include "part.pyx"\n')
    (tmp_path / "part.pyx").write_text("def f(x):\n    return <size_t><void*>x.ptr\n")
    r = check_paths([str(tmp_path)])
    assert r.files_checked == 2 and not r.notes
    assert [(Path(f.path).name, f.line, f.code) for f in r.findings] == [("part.pyx", 2, "CYP001")]


def test_pre_commit_hook_definition():
    text = (Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text()
    # One hook, plain `key: value` lines (no YAML library needed to read it).
    body = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert body[0] == "- id: mltools-cython-check"
    hook = dict(l.strip().lstrip("- ").split(": ", 1) for l in body)
    assert hook["entry"] == "mltools cython check" and hook["language"] == "python"
    assert hook["types"] == "[cython]" and hook["require_serial"] == "true"
    files = re.compile(hook["files"])
    assert files.search("a/b.pyx") and files.search("b.pxd") and not files.search("c.pxi")
    from mltools.cli import cli
    assert "check" in cli.get_command(None, "cython").commands


def test_worker_processes_give_the_same_report(syntax_report):
    one = check_paths([str(RULES_DIR)], CheckSettings(types=False, jobs=1))
    three = check_paths([str(RULES_DIR)], CheckSettings(types=False, jobs=3))
    assert one.findings == three.findings == syntax_report.findings
    assert one.files_checked == three.files_checked


def test_cython_itself_accepts_every_case():
    """Cython's own analysis reports no error on the corpus (bad cases included:
    the compiler is silent about these pitfalls), so the cases are real Cython."""
    from mltools.cythoncheck import typed

    pool = typed.ContextPool(typed.CythonOptions())
    for path in sorted(RULES_DIR.glob("*.pyx")):
        if path.name in ("cyp000_unresolved.pyx", "included_helpers.pxi"):
            continue
        res = typed.check_file_typed(str(path), pool)
        assert res.parse_error is None and res.semantic_errors == [], (path.name, res.semantic_errors)


def test_odd_inputs(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    res = cli("cython", "check", str(tmp_path / "notes.txt"))
    assert res.exit_code == 2 and "not a Cython source" in res.stderr
    (tmp_path / "bad_enc.pyx").write_bytes(b'x = "\xff\xfe"\n')
    res = cli("cython", "check", str(tmp_path / "bad_enc.pyx"))
    assert res.exit_code == 2 and "bad_enc.pyx:1:" in res.stderr and "Decoding error" in res.stderr
    (tmp_path / "my-mod.pyx").write_text("def f(a):\n    return <size_t><void*>a.ptr\n")
    res = cli("cython", "check", "--json", str(tmp_path / "my-mod.pyx"))
    assert res.exit_code == 1 and [f["code"] for f in res.json()["findings"]] == ["CYP001"]
    (tmp_path / "empty").mkdir()
    res = cli("cython", "check", str(tmp_path / "empty"))
    assert res.exit_code == 0 and "no .pyx, .pxd or pure-Python-mode .py files" in res.stderr
    assert res.stdout == "checked 0 files: no findings\n"
