"""The loader configuration and $ORIGIN/$LIB/$PLATFORM expansion, against the loader itself."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mltools.elf.ldso import expand_dst, host_loader_config, legacy_subdir_combinations

CFG = host_loader_config()


def test_expand_dst_follows_dl_dst_substitute():
    cfg = CFG
    assert expand_dst("$ORIGIN/../lib", "/opt/x/bin", cfg) == "/opt/x/bin/../lib"
    assert expand_dst("${ORIGIN}/lib", "/o", cfg) == "/o/lib"
    assert expand_dst("$ORIGIN/$LIB", "/o", cfg) == f"/o/{cfg.dst_lib}"
    assert expand_dst("/p/$PLATFORM", None, cfg) == f"/p/{cfg.platform}"
    assert expand_dst("$ORIGINAL/x", "/o", cfg) == "$ORIGINAL/x"      # not a token: kept literally
    assert expand_dst("$ORIGIN_X", "/o", cfg) == "$ORIGIN_X"
    assert expand_dst("$FOO/x", "/o", cfg) == "$FOO/x"
    assert expand_dst("$ORIGIN/x", None, cfg) is None                 # no origin: element dropped
    assert expand_dst("/plain", None, cfg) == "/plain"


@pytest.mark.skipif(not CFG.source.endswith("--help") and "list-diagnostics" not in CFG.source,
                    reason="the host loader could not be asked")
def test_search_order_matches_ld_debug(tmp_path):
    """The directories tried for one RPATH entry, in order, are those LD_DEBUG=libs prints."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    exe = tmp_path / "m"
    src = tmp_path / "m.c"
    src.write_text("int main(void){return 0;}")
    subprocess.run(["gcc", "-o", str(exe), str(src), "-Wl,--disable-new-dtags", f"-Wl,-rpath,{tmp_path}/zz"],
                   check=True)
    out = subprocess.run([str(exe)], env={"LD_DEBUG": "libs", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True).stderr
    m = re.search(r"search path=(\S+)\s+\(RPATH from file", out)
    assert m, out
    printed = m.group(1).split(":")
    ours = [f"{tmp_path}/zz/{s}".rstrip("/") for s in
            tuple(f"glibc-hwcaps/{h}" for h in CFG.hwcaps_subdirs) + CFG.legacy_subdirs + ("",)]
    assert printed == ours


def test_system_dirs_match_ld_so_help():
    if CFG.source == "defaults":
        pytest.skip("the host loader could not be asked")
    out = subprocess.run([CFG.interpreter, "--help"], capture_output=True, text=True).stdout
    dirs = [line.split()[0] for line in out.splitlines() if "(system search path)" in line]
    assert list(CFG.system_dirs) == dirs


def test_legacy_combinations():
    names = [("x86_64", True), ("tls", False), ("x86_64", False)]
    assert legacy_subdir_combinations(names) == (
        "tls/x86_64/x86_64", "tls/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64", "x86_64")
    assert legacy_subdir_combinations([]) == ()
