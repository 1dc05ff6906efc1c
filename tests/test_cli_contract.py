"""Meta-tests that keep every command honest: help, --json, docs, exit codes."""
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mltools.cli import cli

DOCS = Path(__file__).resolve().parent.parent / "docs"

# A cheap invocation per command whose stdout must be one JSON document with
# schema/version. Every command must appear here (test_every_command_has_a_json_smoke).
# Entries are argv lists, or callables taking (tmp_path, cbuild) and returning one.
JSON_SMOKE = {
    "env": ["env", "--json"],
    "malloc-fail": lambda tmp_path, cbuild: [
        "malloc-fail", "--json", "--fail-at", "1",
        str(cbuild.build("mf_smoke", "#include <stdlib.h>\nint main(void){free(malloc(8));return 0;}\n"))],
    "io-fail": lambda tmp_path, cbuild: [
        "io-fail", "--json", "--fail-at", "1", "--path", str(tmp_path / "*"), "--",
        str(cbuild.build("iof_smoke", "#include <stdio.h>\nint main(int c, char **v){FILE *f = fopen(v[1], \"w\");"
                         "return f ? fclose(f) : 0;}\n")), str(tmp_path / "out")],
    "doctor": ["doctor", "--json"],
    "doctor diff": lambda tmp_path, cbuild: [
        "doctor", "diff", "--json",
        str((tmp_path / "a.json").write_text('{"schema": "mltools.doctor", "version": 1}') and tmp_path / "a.json"),
        str(tmp_path / "a.json")],
    "elf inspect": lambda tmp_path, cbuild: ["elf", "inspect", "--json",
                                             cbuild.build("smoke", "int main(void){return 0;}")],
    "elf trace": ["elf", "trace", "--json", "--", "/bin/true"],
    "elf ldcache": ["elf", "ldcache", "--json", "--no-stale-check"],
    "elf scan": lambda tmp_path, cbuild: ["elf", "scan", "--json",
                                          str(cbuild.build("smoke", "int main(void){return 0;}").parent)],
    "elf tree": lambda tmp_path, cbuild: ["elf", "tree", "--json",
                                          cbuild.build("smoke", "int main(void){return 0;}")],
    "elf check": lambda tmp_path, cbuild: ["elf", "check", "--json",
                                           cbuild.build("smoke", "int main(void){return 0;}")],
    "bench shakeshake": ["bench", "shakeshake", "--params-only", "--json"],
    "bench sum": ["bench", "sum", "--quick", "--json"],
    "cython check": lambda tmp_path, cbuild: [
        "cython", "check", "--json",
        str((tmp_path / "m.pyx").write_text("def f(a):\n    return <size_t><void*>a.ptr\n") and tmp_path / "m.pyx")],
    "cython demo": ["cython", "demo", "--json"],
    "bench numa": ["bench", "numa", "--topology-only", "--json"],
    "bench compare": lambda tmp_path, cbuild: ["bench", "compare", "--json", _results_file(tmp_path),
                                               _results_file(tmp_path)],
}


def _results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "mltools.bench.sum", "version": 2, "cases": [
        {"name": "k", "unit": "ns", "better": "lower", "samples": [1.0, 1.1, 0.9]}]}))
    return str(path)


def all_commands(group=cli, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = prefix + (name,)
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:       # a command of its own too (mltools doctor)
                yield " ".join(path), cmd
            yield from all_commands(cmd, path)
        else:
            yield " ".join(path), cmd


COMMANDS = dict(all_commands())


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help(cli, path):
    res = cli(*path.split(), "--help")
    assert res.exit_code == 0, res.stderr
    assert "Usage:" in res.stdout
    assert COMMANDS[path].help, f"{path} has no help text"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_json_option(path):
    names = {opt for p in COMMANDS[path].params for opt in getattr(p, "opts", [])}
    assert "--json" in names or "--format" in names, f"{path} has no --json"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_quiet_option(path):
    names = {opt for p in COMMANDS[path].params for opt in getattr(p, "opts", [])}
    assert "--quiet" in names, f"{path} has no --quiet"


def test_every_command_has_a_json_smoke():
    assert sorted(COMMANDS) == sorted(JSON_SMOKE)


@pytest.mark.parametrize("path", sorted(JSON_SMOKE))
def test_json_output_parses(cli, path, tmp_path, cbuild):
    argv = JSON_SMOKE[path]
    if callable(argv):
        argv = argv(tmp_path, cbuild)
    res = cli(*argv)
    if res.exit_code == 2 and "pip install 'mltools[" in res.stderr:
        pytest.skip(f"optional extra not installed: {res.stderr.strip()}")
    assert res.exit_code in (0, 1), res.stderr
    doc = json.loads(res.stdout)
    assert isinstance(doc.get("schema"), str) and doc["schema"].startswith("mltools.")
    assert isinstance(doc.get("version"), int)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_is_documented(path):
    text = (DOCS / "cli.md").read_text()
    assert re.search(rf"^#+ `mltools {re.escape(path)}`", text, re.M), f"docs/cli.md lacks `mltools {path}`"


def test_unknown_command_and_option_exit_2(cli):
    res = cli("no-such-command")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines()[-1].startswith("Error:")
    res = cli("env", "--bogus")
    assert res.exit_code == 2 and "No such option" in res.stderr


def test_version(cli):
    from mltools import __version__
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"mltools {__version__}"


def test_mltools_error_is_one_line_exit_2(cli, monkeypatch):
    import mltools.env as env_mod
    from mltools.errors import InputError

    def boom(*a, **k):
        raise InputError("cannot read /nowhere:\nsecond line")

    monkeypatch.setattr(env_mod, "collect_env", boom)
    res = cli("env")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr == "Error: cannot read /nowhere: second line\n"
    res = cli("env", env={"MLTOOLS_DEBUG": "1"})
    assert res.exit_code == 2 and "Traceback" in res.stderr and "InputError" in res.stderr


def test_internal_error_is_one_line(cli, monkeypatch):
    import mltools.env as env_mod

    monkeypatch.setattr(env_mod, "collect_env", lambda *a, **k: {}["missing"])
    res = cli("env")
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: internal error: KeyError") and res.stderr.count("\n") == 1


def test_target_command_uses_125_for_its_own_failures():
    """A TargetCommand maps its own usage errors and MltoolsErrors to 125."""
    from click.testing import CliRunner

    from mltools.cli import MltoolsGroup, TargetCommand
    from mltools.errors import UsageError

    @click.group(cls=MltoolsGroup)
    def root():
        pass

    @root.command("run", cls=TargetCommand)
    @click.option("--fail", is_flag=True)
    @click.argument("status", type=int)
    def run(fail, status):
        if fail:
            raise UsageError("cannot start the target")
        click.get_current_context().exit(status)

    r = CliRunner()
    assert r.invoke(root, ["run", "7"]).exit_code == 7
    assert r.invoke(root, ["run", "--fail", "0"]).exit_code == 125
    assert r.invoke(root, ["run", "--bogus", "0"]).exit_code == 125
    assert r.invoke(root, ["run", "notanint"]).exit_code == 125
    assert r.invoke(root, ["nothere"]).exit_code == 2


def test_broken_pipe_is_quiet():
    """`mltools env | head -1` must not print a traceback."""
    p1 = subprocess.Popen([sys.executable, "-m", "mltools", "env"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    p1.stdout.close()  # the reader goes away before the writer writes
    err = p1.stderr.read().decode()
    p1.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err
