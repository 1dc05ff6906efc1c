"""The loader configuration and $ORIGIN/$LIB/$PLATFORM expansion, against the loader itself.

mltools reads the configuration from the loader file and /proc/cpuinfo without
running anything; here the loader is asked (``--help``, ``--list-diagnostics``,
``LD_DEBUG=libs``) on this CPU and, under ``qemu-x86_64 -cpu MODEL``, on other
x86-64 CPUs, whose features a small cpuid probe reports.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mltools._sysfs import isa_level_from_flags
from mltools.elf.ldso import (expand_dst, host_loader_config, legacy_subdir_combinations, read_loader_file,
                              x86_cpu_traits)

CFG = host_loader_config()
LDSO = CFG.interpreter


def ask(argv):
    """(--help text, --list-diagnostics values) of the loader run as ``argv``."""
    helptext = subprocess.run([*argv, "--help"], capture_output=True, text=True).stdout
    diag = subprocess.run([*argv, "--list-diagnostics"], capture_output=True, text=True).stdout
    values = {}
    for line in diag.splitlines():
        key, _, value = line.partition("=")
        values[key] = value.strip('"')
    return helptext, values


def help_sections(text):
    """(system dirs, glibc-hwcaps searched, supported levels, legacy names searched, platform) from --help."""
    dirs, hwcaps, supported, legacy, platform = [], [], [], [], None
    section = None
    for line in text.splitlines():
        if line.startswith("Shared library search path"):
            section = "dirs"
        elif line.startswith("Subdirectories of glibc-hwcaps"):
            section = "hwcaps"
        elif line.startswith("Legacy HWCAP subdirectories"):
            section = "legacy"
        elif not line.startswith("  "):
            section = None
        elif section == "dirs" and "(system search path)" in line:
            dirs.append(line.split()[0])
        elif section == "hwcaps":
            name = line.split()[0]
            if "supported" in line:
                supported.append(name)
            if "searched" in line:
                hwcaps.append(name)
        elif section == "legacy" and "searched" in line:
            name = line.split()[0]
            if "AT_PLATFORM" in line:
                platform = name
            elif name != "tls":
                legacy.append(name)
    return dirs, hwcaps, supported, legacy, platform


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


def test_host_config_is_what_the_loader_says():
    """Read from the file and /proc/cpuinfo, it equals the loader's own --help and --list-diagnostics."""
    helptext, diag = ask([LDSO])
    dirs, hwcaps, supported, legacy, platform = help_sections(helptext)
    assert list(CFG.system_dirs) == [d.rstrip("/") for d in dirs]
    assert list(CFG.hwcaps_subdirs) == hwcaps
    assert CFG.platform == diag["dl_platform"] == platform
    assert CFG.dst_lib == diag["dl_dst_lib"]
    assert CFG.glibc_version == diag["version.version"]
    assert CFG.legacy_subdirs == legacy_subdir_combinations(platform, legacy)
    levels = [int(n.rsplit("v", 1)[1]) for n in supported if re.fullmatch(r"x86-64-v\d", n)]
    assert CFG.isa_level == max(levels + [1])
    static = read_loader_file(LDSO)
    assert static["cache_path"] == "/etc/ld.so.cache" and static["legacy"] == ("Legacy HWCAP" in helptext)


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


def test_legacy_combinations_put_tls_then_platform_then_hwcaps():
    # measured with LD_DEBUG=libs on the i386 loader (tests/test_elf_foreign.py checks it again)
    assert legacy_subdir_combinations("i686", ["sse2"]) == (
        "tls/i686/sse2", "tls/i686", "tls/sse2", "tls", "i686/sse2", "i686", "sse2")
    assert legacy_subdir_combinations("x86_64", ["x86_64"]) == (
        "tls/x86_64/x86_64", "tls/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64", "x86_64")
    assert legacy_subdir_combinations(None, []) == ("tls",)


# cpuid, reported with the names /proc/cpuinfo uses; AVX state only when the OS enabled it (as the kernel does)
PROBE = r"""
#include <cpuid.h>
#include <stdio.h>
#include <string.h>
static unsigned long long xcr0(void) { unsigned a, d; __asm__("xgetbv" : "=a"(a), "=d"(d) : "c"(0)); return a | ((unsigned long long)d << 32); }
int main(void) {
    unsigned a, b, c, d, vendor[4] = {0};
    __cpuid(0, a, vendor[0], vendor[2], vendor[1]);
    printf("vendor %s\nflags", (char *)vendor);
    __cpuid(1, a, b, c, d);
    int avx_os = (c & (1u << 27)) && (xcr0() & 6) == 6, avx512_os = avx_os && (xcr0() & 0xe0) == 0xe0;
    struct { unsigned *reg; int bit; const char *name; int need; } f1[] = {
        {&d, 0, "fpu", 0}, {&d, 8, "cx8", 0}, {&d, 15, "cmov", 0}, {&d, 23, "mmx", 0}, {&d, 24, "fxsr", 0},
        {&d, 25, "sse", 0}, {&d, 26, "sse2", 0}, {&c, 0, "pni", 0}, {&c, 9, "ssse3", 0}, {&c, 12, "fma", 1},
        {&c, 13, "cx16", 0}, {&c, 19, "sse4_1", 0}, {&c, 20, "sse4_2", 0}, {&c, 22, "movbe", 0},
        {&c, 23, "popcnt", 0}, {&c, 26, "xsave", 0}, {&c, 28, "avx", 1}, {&c, 29, "f16c", 1}};
    for (unsigned i = 0; i < sizeof f1 / sizeof f1[0]; i++)
        if ((*f1[i].reg >> f1[i].bit & 1) && (!f1[i].need || avx_os)) printf(" %s", f1[i].name);
    __cpuid_count(7, 0, a, b, c, d);
    struct { int bit; const char *name; int need; } f7[] = {
        {3, "bmi1", 0}, {5, "avx2", 1}, {8, "bmi2", 0}, {16, "avx512f", 2}, {17, "avx512dq", 2},
        {26, "avx512pf", 2}, {27, "avx512er", 2}, {28, "avx512cd", 2}, {30, "avx512bw", 2}, {31, "avx512vl", 2}};
    for (unsigned i = 0; i < sizeof f7 / sizeof f7[0]; i++)
        if ((b >> f7[i].bit & 1) && (f7[i].need == 0 || (f7[i].need == 1 ? avx_os : avx512_os))) printf(" %s", f7[i].name);
    __cpuid(0x80000001, a, b, c, d);
    if (c & 1) printf(" lahf_lm");
    if (c & (1u << 5)) printf(" abm");
    if (d & (1u << 11)) printf(" syscall");
    printf("\n");
    return 0;
}
"""

CPU_MODELS = ["Haswell", "Skylake-Client", "Icelake-Server", "Nehalem", "core2duo", "EPYC", "Conroe", "max"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if shutil.which("qemu-x86_64") is None or shutil.which("gcc") is None:
        pytest.skip("needs qemu-x86_64 (qemu-user) and gcc")
    d = tmp_path_factory.mktemp("cpuid")
    (d / "probe.c").write_text(PROBE)
    subprocess.run(["gcc", "-O1", "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    return d / "probe"


@pytest.mark.parametrize("model", CPU_MODELS)
def test_cpu_rules_match_the_loader_on_other_x86_64_cpus(probe, model):
    """$PLATFORM, the legacy hwcap names and the x86-64 level glibc derives from a CPU, for CPUs this
    machine does not have: the loader and the probe both run under qemu-x86_64 -cpu MODEL."""
    out = subprocess.run(["qemu-x86_64", "-cpu", model, str(probe)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"qemu has no CPU model {model}: {out.stderr.strip()[:80]}")
    fields = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    flags = set(fields.get("flags", "").split())
    helptext, diag = ask(["qemu-x86_64", "-cpu", model, LDSO])
    _dirs, hwcaps, supported, legacy, platform = help_sections(helptext)
    ours_platform, ours_hw = x86_cpu_traits(fields.get("vendor", ""), flags)
    assert (ours_platform, list(ours_hw)) == (diag["dl_platform"], legacy), (model, sorted(flags))
    assert platform == ours_platform
    level = isa_level_from_flags(flags)
    assert [f"x86-64-v{n}" for n in (4, 3, 2) if n <= level] == supported, (model, sorted(flags))


def test_glibc_tunables_are_what_the_loader_makes_of_them():
    """GLIBC_TUNABLES can mask CPU features (glibc.cpu.hwcaps=-AVX2 drops x86-64-v3 and v4): with
    it set, the configuration is the loader's own answer in that environment."""
    import json
    import os
    import sys

    env = {**os.environ, "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}
    code = ("import json; from mltools.elf.ldso import host_loader_config as h; c = h(); "
            "print(json.dumps([c.hwcaps_subdirs, c.platform, c.legacy_subdirs, c.isa_level, c.source]))")
    ours = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                     check=True).stdout)
    helptext = subprocess.run([LDSO, "--help"], capture_output=True, text=True, env=env).stdout
    _dirs, hwcaps, supported, legacy, platform = help_sections(helptext)
    assert ours[0] == hwcaps and ours[1] == platform
    assert tuple(ours[2]) == legacy_subdir_combinations(platform, legacy)
    assert "GLIBC_TUNABLES" in ours[4]
    if "x86-64-v3" in CFG.hwcaps_subdirs:
        assert "x86-64-v3" not in ours[0]          # the tunable took effect, and we saw it
