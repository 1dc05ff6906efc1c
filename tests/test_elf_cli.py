"""`mltools elf` commands end to end (CliRunner)."""
from __future__ import annotations

import os
import sys


def test_inspect_json_has_contract_fields(cli, cbuild):
    lib = cbuild.build("libinsp.so", "int f(void){return 1;}", shared=True,
                       flags=["-Wl,-soname,libinsp.so.1", "-Wl,-rpath,$ORIGIN/../lib", "-Wl,--disable-new-dtags"])
    res = cli("elf", "inspect", "--json", lib)
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.elf.inspect" and doc["version"] == 1
    f = doc["files"][0]
    assert f["soname"] == "libinsp.so.1"
    assert f["rpath"]["raw"] == "$ORIGIN/../lib"
    assert f["rpath"]["expanded"] == [os.path.dirname(os.path.abspath(lib)) + "/../lib"]
    assert f["runpath"] is None and f["defined_symbols"] >= 1
    assert len(f["sha256"]) == 64


def test_inspect_symbols_are_demangled(cli, cbuild):
    lib = cbuild.build("libcxx.so", "namespace ns { int g(int x){return x;} }", shared=True, lang="c++")
    res = cli("elf", "inspect", "--symbols", "--json", lib)
    assert res.exit_code == 0, res.stderr
    names = {s["demangled"] for s in res.json()["files"][0]["symbols"]}
    assert "ns::g(int)" in names


def test_inspect_bad_inputs_exit_2_one_line(cli, tmp_path):
    lfs = tmp_path / "libfoo.so"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    for target in (lfs, tmp_path, tmp_path / "missing.so"):
        res = cli("elf", "inspect", target)
        assert res.exit_code == 2, (target, res.stdout)
        assert res.stdout == "" and res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1


def test_inspect_text_output(cli):
    res = cli("elf", "inspect", os.path.realpath(sys.executable))
    assert res.exit_code == 0
    assert "interpreter" in res.stdout and "sha256" in res.stdout
