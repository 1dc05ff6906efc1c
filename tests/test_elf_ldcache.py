"""ld.so.cache parsing against ldconfig -p (the oracle), in every format ldconfig writes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from mltools.elf.ldcache import parse_ld_cache, read_ld_cache, read_ld_so_conf
from mltools.errors import InputError

LDCONFIG = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
needs_ldconfig = pytest.mark.skipif(LDCONFIG is None, reason="needs ldconfig")


def ldconfig_p(cache=None):
    argv = [LDCONFIG, "-p"] + (["-C", str(cache)] if cache else [])
    out = subprocess.run(argv, capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    return [m.groups() for line in out.splitlines()
            if (m := re.match(r"\s+(\S+) \(([^)]*?)(?:, hwcap: \"([^\"]*)\")?\) => (\S+)", line))]


def ours(cache):
    return [(e.name, e.description, e.hwcaps_subdir, e.path) for e in cache.entries]


@needs_ldconfig
@pytest.mark.skipif(not os.path.exists("/etc/ld.so.cache"), reason="no /etc/ld.so.cache")
def test_system_cache_lists_what_ldconfig_lists():
    cache = read_ld_cache("/etc/ld.so.cache")
    assert ours(cache) == ldconfig_p() and len(cache.entries) > 10


@pytest.fixture(scope="module")
def built_caches(tmp_path_factory, cbuild):
    """Caches written by ldconfig in each format, for a directory with a glibc-hwcaps copy."""
    if LDCONFIG is None or os.geteuid() != 0:
        pytest.skip("writing a cache with ldconfig -C needs ldconfig and root")
    base = tmp_path_factory.mktemp("ldcache")
    lib = cbuild.build("libmlcache.so.1", "int f(void){return 1;}", shared=True,
                       flags=["-Wl,-soname,libmlcache.so.1"])
    d = base / "lib"
    (d / "glibc-hwcaps" / "x86-64-v2").mkdir(parents=True)
    shutil.copy(lib, d / "libmlcache.so.1")
    shutil.copy(lib, d / "glibc-hwcaps" / "x86-64-v2" / "libmlcache.so.1")
    conf = base / "ld.so.conf"
    conf.write_text(f"# test\n{d}\n")
    caches = {}
    for fmt in ("new", "old", "compat"):
        out = base / f"cache.{fmt}"
        subprocess.run([LDCONFIG, "-X", "-c", fmt, "-f", str(conf), "-C", str(out)], check=True,
                       capture_output=True)
        caches[fmt] = out
    return base, d, conf, caches


@needs_ldconfig
@pytest.mark.parametrize("fmt", ["new", "old", "compat"])
def test_every_format_parses_like_ldconfig(built_caches, fmt):
    _base, d, _conf, caches = built_caches
    cache = read_ld_cache(str(caches[fmt]))
    assert cache.format == {"new": "new", "old": "old", "compat": "combined"}[fmt]
    theirs = ldconfig_p(caches[fmt])
    mine = ours(cache)
    if fmt == "compat":       # ldconfig -p misprints hwcaps names in this format; compare the rest
        theirs = [(n, a, p) for n, a, _h, p in theirs]
        mine = [(n, a, p) for n, a, _h, p in mine]
    else:
        theirs = [(n, a, h or None, p) for n, a, h, p in theirs]
    assert mine == theirs
    assert any(e.path.startswith(str(d)) for e in cache.entries)


@needs_ldconfig
def test_hwcaps_entry_wins_when_the_level_is_active(built_caches):
    _base, d, _conf, caches = built_caches
    cache = read_ld_cache(str(caches["new"]))
    assert cache.hwcaps_subdirs == ("x86-64-v2",)
    assert cache.lookup("libmlcache.so.1", ("x86-64-v3", "x86-64-v2")).path == \
        f"{d}/glibc-hwcaps/x86-64-v2/libmlcache.so.1"
    assert cache.lookup("libmlcache.so.1", ()).path == f"{d}/libmlcache.so.1"
    assert cache.lookup("libmlcache.so.1", ("x86-64-v2",), flags=0x0A03) is None   # AArch64 asks


@needs_ldconfig
def test_stale_cache_is_reported(cli, built_caches, cbuild):
    base, d, conf, caches = built_caches
    fresh = cli("elf", "ldcache", "--cache", caches["new"], "--conf", conf, "--json")
    doc = fresh.json()
    assert doc["schema"] == "mltools.elf.ldcache"
    assert not [f for f in doc["findings"] if str(d) in f["message"]]
    late = cbuild.build("libmllate.so.2", "int g(void){return 2;}", shared=True, flags=["-Wl,-soname,libmllate.so.2"])
    shutil.copy(late, d / "libmllate.so.2")
    try:
        res = cli("elf", "ldcache", "--cache", caches["new"], "--conf", conf, "--json")
        assert res.exit_code == 1
        codes = [(f["code"], f["details"].get("soname")) for f in res.json()["findings"]]
        assert ("LIBRARY_NOT_IN_CACHE", "libmllate.so.2") in codes
    finally:
        os.unlink(d / "libmllate.so.2")


def test_ld_so_conf_include_globs(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b/lib/\n")
    (tmp_path / "conf.d" / "a.conf").write_text("# comment\n/opt/a/lib # trailing\nhwcap 1 nosegneg\n")
    (tmp_path / "ld.so.conf").write_text("include conf.d/*.conf\n/usr/local/lib\n/opt/a/lib\n")
    assert read_ld_so_conf(str(tmp_path / "ld.so.conf")) == ("/opt/a/lib", "/opt/b/lib", "/usr/local/lib")


def test_malformed_caches_are_input_errors(tmp_path, cli):
    with pytest.raises(InputError):
        parse_ld_cache(b"not a cache at all")
    with pytest.raises(InputError):
        parse_ld_cache(b"glibc-ld.so.cache1.1" + b"\xff\xff\x00\x00" + b"\0" * 24)
    bad = tmp_path / "ld.so.cache"
    bad.write_bytes(b"ld.so-1.7.0\0\xff\xff\xff\x00")
    res = cli("elf", "ldcache", "--cache", bad)
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1
