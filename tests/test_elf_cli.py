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


def _prog_with_missing(cbuild, tmp_path):
    lib = cbuild.build("libmlpresent.so.1", "int f(void){return 1;}", shared=True,
                       flags=["-Wl,-soname,libmlpresent.so.1"])
    gone = cbuild.build("libmlgone.so.3", "int g(void){return 1;}", shared=True,
                        flags=["-Wl,-soname,libmlgone.so.3"], subdir="gone")
    exe = cbuild.build("treemain", "int f(void);int g(void);int main(void){return f()+g();}",
                       flags=["-Wl,--no-as-needed", str(lib), str(gone), "-Wl,--enable-new-dtags",
                              f"-Wl,-rpath,{os.path.dirname(lib)}"])
    return exe, lib, gone


def test_tree_missing_library_exit_1_with_tried_paths(cli, cbuild, tmp_path):
    exe, lib, gone = _prog_with_missing(cbuild, tmp_path)
    res = cli("elf", "tree", exe)
    assert res.exit_code == 1
    assert "libmlgone.so.3 => not found" in res.stdout and "tried, in order:" in res.stdout
    assert f"{os.path.dirname(lib)}/libmlgone.so.3" in res.stdout      # the RUNPATH dir was tried
    assert "MISSING" in res.stdout
    doc = cli("elf", "tree", "--json", exe).json()
    assert doc["schema"] == "mltools.elf.tree" and doc["version"] == 1 and doc["root"] == str(exe)
    for lib_doc in doc["libraries"]:
        assert {"soname", "path", "via", "needed_by", "depth"} <= set(lib_doc)
    gone_doc = next(x for x in doc["libraries"] if x["soname"] == "libmlgone.so.3")
    assert gone_doc["path"] is None and gone_doc["via"] is None
    assert [c["source"] for c in gone_doc["tried"]][:1] == ["runpath"]
    assert any(f["code"] == "MISSING" for f in doc["findings"])
    # LD_LIBRARY_PATH given on the command line finds it
    ok = cli("elf", "tree", "--json", "--ld-library-path", os.path.dirname(gone), exe)
    assert ok.exit_code == 0
    found = next(x for x in ok.json()["libraries"] if x["soname"] == "libmlgone.so.3")
    assert found["via"] == "ld_library_path" and found["path"] == str(gone)
    env = cli("elf", "tree", "--json", "--env", f"LD_LIBRARY_PATH={os.path.dirname(gone)}", exe)
    assert env.exit_code == 0


def test_tree_flat_preload_mask_and_many_files(cli, cbuild, tmp_path):
    exe, lib, gone = _prog_with_missing(cbuild, tmp_path)
    res = cli("elf", "tree", "--flat", "--preload", str(gone), "--hwcaps-mask", "", exe)
    assert res.exit_code == 0, res.stdout
    assert res.stdout.splitlines()[1].split()[:2] == ["soname", "path"]
    assert "preload" in res.stdout
    many = cli("elf", "tree", "--json", "--clean-env", "/usr/bin/true", exe)
    doc = many.json()
    assert many.exit_code == 1 and doc["schema"] == "mltools.elf.trees"
    assert [t["root"] for t in doc["trees"]] == ["/usr/bin/true", str(exe)]
    assert doc["trees"][1]["schema"] == "mltools.elf.tree"


def test_tree_bad_inputs_exit_2(cli, tmp_path):
    lfs = tmp_path / "prog"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    for target in (lfs, tmp_path, tmp_path / "missing"):
        res = cli("elf", "tree", target)
        assert res.exit_code == 2 and res.stdout == "" and res.stderr.count("\n") == 1
    assert cli("elf", "tree", "--env", "NOEQUALS", "/usr/bin/true").exit_code == 2
    static = tmp_path / "static.txt"
    static.write_bytes(open("/usr/bin/true", "rb").read()[:40])
    assert cli("elf", "tree", static).exit_code == 2


def test_tree_many_files_in_processes_matches_one_process(cli):
    import glob

    from mltools.elf.reader import read_elf
    files = []
    for p in sorted(glob.glob("/usr/bin/*")):
        try:
            if os.path.isfile(p) and read_elf(p).has_dynamic:
                files.append(p)
        except Exception:
            continue
        if len(files) == 70:
            break
    if len(files) < 64:
        import pytest
        pytest.skip("fewer than 64 programs in /usr/bin")
    one = cli("elf", "tree", "--json", "--clean-env", "-j", "1", *files)
    two = cli("elf", "tree", "--json", "--clean-env", "-j", "2", *files)
    assert one.exit_code == two.exit_code
    assert one.json() == two.json() and len(one.json()["trees"]) == 70


def test_a_separate_debug_file_is_named_for_what_it_is(cli, cbuild, tmp_path):
    """objcopy --only-keep-debug leaves a PT_DYNAMIC of size 0: tree says so, inspect reads the
    build-id from the note it keeps (readelf -n agrees)."""
    import shutil
    import subprocess

    if shutil.which("objcopy") is None:
        import pytest
        pytest.skip("needs objcopy (binutils)")
    lib = cbuild.build("libdbg.so", "int f(void){return 1;}", shared=True, flags=["-Wl,--build-id"])
    debug = tmp_path / "libdbg.so.debug"
    subprocess.run(["objcopy", "--only-keep-debug", lib, str(debug)], check=True)
    res = cli("elf", "tree", str(debug))
    assert res.exit_code == 2 and "PT_DYNAMIC is empty (a separate debug-info file?)" in res.stderr
    notes = subprocess.run(["readelf", "-n", str(debug)], capture_output=True, text=True).stdout
    build_id = notes.split("Build ID: ")[1].split()[0]
    doc = cli("elf", "inspect", "--json", str(debug)).json()
    assert doc["files"][0]["build_id"] == build_id
