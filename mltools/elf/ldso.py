"""What the host's dynamic loader is configured to do, read from the loader itself.

glibc's ld.so (2.33+) prints its system search directories and glibc-hwcaps
subdirectories in ``ld.so --help`` and (2.34+) ``$LIB``, ``$PLATFORM`` and the
rest in ``ld.so --list-diagnostics``. Neither runs a target program. Where the
loader cannot be asked (a sysroot, another libc), documented defaults are used
and ``source`` says so.

Also here: dynamic string token expansion (``$ORIGIN``, ``$LIB``,
``$PLATFORM``), exactly as ``elf/dl-load.c:_dl_dst_substitute`` does it.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

from mltools import _proc

__all__ = ["LoaderConfig", "host_loader_config", "loader_config_for_root", "expand_dst",
           "split_search_path", "DEFAULT_INTERPRETER"]

DEFAULT_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"


@dataclass(frozen=True)
class LoaderConfig:
    """The loader's fixed configuration; :func:`dataclasses.replace` it to simulate another host."""
    interpreter: str                       # the loader's path (PT_INTERP of programs)
    elf_class: int                         # 64 or 32: candidates of the other class are skipped
    machine: int                           # e_machine candidates must have (62 = x86-64)
    system_dirs: Tuple[str, ...]           # compiled-in default directories, in order
    hwcaps_subdirs: Tuple[str, ...]        # glibc-hwcaps/<name> tried first, best first (active only)
    legacy_subdirs: Tuple[str, ...]        # glibc <= 2.36: tls/x86_64/... tried after hwcaps
    dst_lib: str                           # $LIB
    platform: str                          # $PLATFORM
    cache_path: str                        # /etc/ld.so.cache
    preload_path: str                      # /etc/ld.so.preload
    root: str = "/"                        # sysroot prefix for every absolute path
    glibc_version: Optional[str] = None
    source: str = "defaults"               # where the values came from
    kernel_version: Optional[Tuple[int, int, int]] = None
    isa_level: int = 0                     # the CPU's x86-64 level (0: unknown, no check)

    def with_hwcaps_mask(self, mask: Optional[Sequence[str]]) -> "LoaderConfig":
        """Only the glibc-hwcaps subdirectories named in ``mask`` (as ``--glibc-hwcaps-mask``)."""
        if mask is None:
            return self
        allowed = set(mask)
        return replace(self, hwcaps_subdirs=tuple(s for s in self.hwcaps_subdirs if s in allowed))

    def in_root(self, path: str) -> str:
        """``path`` (absolute, as the target sees it) on this machine."""
        if self.root in ("", "/") or not path.startswith("/"):
            return path
        return self.root.rstrip("/") + path


def _parse_help(text: str):
    system_dirs, hwcaps, legacy_names, supported = [], [], [], []
    section = None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("Shared library search path"):
            section = "dirs"
        elif line.startswith("Subdirectories of glibc-hwcaps"):
            section = "hwcaps"
        elif line.startswith("Legacy HWCAP subdirectories"):
            section = "legacy"
        elif not line.startswith("  "):
            section = None if s else section
        elif section == "dirs" and s.endswith("(system search path)"):
            system_dirs.append(s.split(" (")[0].rstrip("/") or "/")
        elif section == "hwcaps" and "searched" in s:
            hwcaps.append(s.split(" ")[0])
        if section == "hwcaps" and "supported" in s:
            supported.append(s.split(" ")[0])
        elif section == "legacy" and "searched" in s:
            legacy_names.append((s.split(" ")[0], "AT_PLATFORM" in s))
    return system_dirs, hwcaps, legacy_names, supported


def _level(names) -> int:
    levels = [int(n.rsplit("v", 1)[1]) for n in names if re.fullmatch(r"x86-64-v\d", n)]
    return max(levels) if levels else 1
def legacy_subdir_combinations(names) -> Tuple[str, ...]:
    """The legacy hwcap subdirectories glibc <= 2.36 tries, in its order.

    ``names`` are the searched legacy names from ``ld.so --help`` as (name,
    is_platform). glibc combines "tls", the hwcap names and the platform, most
    specific first (measured with LD_DEBUG=libs: tls/x86_64/x86_64, tls/x86_64,
    tls/x86_64, tls, x86_64/x86_64, x86_64, x86_64).
    """
    tls = [n for n, plat in names if n == "tls" and not plat]
    hw = [n for n, plat in names if n != "tls" and not plat]
    plat = [n for n, p in names if p]
    comps = tls[:1] + hw + plat[:1]
    n = len(comps)
    out = []
    for mask in range((1 << n) - 1, 0, -1):
        parts = [comps[i] for i in range(n) if mask & (1 << (n - 1 - i))]
        out.append("/".join(parts))
    return tuple(out)


def _kernel_version() -> Optional[Tuple[int, int, int]]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _find_interpreter() -> str:
    from mltools.elf.reader import read_elf
    for exe in (sys.executable, "/bin/sh"):
        try:
            interp = read_elf(os.path.realpath(exe)).interp
        except Exception:   # noqa: BLE001 - any unreadable interpreter: try the next
            continue
        if interp:
            return interp
    return DEFAULT_INTERPRETER


def _defaults(interpreter: str, root: str = "/", hwcaps: Optional[Tuple[str, ...]] = None) -> LoaderConfig:
    """Debian-style multiarch directories if the (root) file system has them, else lib64."""
    multiarch = "x86_64-linux-gnu"
    base = root.rstrip("/")
    if os.path.isdir(f"{base}/usr/lib/{multiarch}") or os.path.isdir(f"{base}/lib/{multiarch}"):
        dirs = (f"/lib/{multiarch}", f"/usr/lib/{multiarch}", "/lib", "/usr/lib")
        dst_lib = f"lib/{multiarch}"
    else:
        dirs = ("/lib64", "/usr/lib64")
        dst_lib = "lib64"
    return LoaderConfig(
        interpreter=interpreter, elf_class=64, machine=62, system_dirs=dirs,
        hwcaps_subdirs=_cpu_hwcaps_subdirs() if hwcaps is None else hwcaps, legacy_subdirs=(), dst_lib=dst_lib,
        platform="x86_64", cache_path="/etc/ld.so.cache", preload_path="/etc/ld.so.preload",
        root=root, source="defaults", kernel_version=_kernel_version())


def _cpu_hwcaps_subdirs() -> Tuple[str, ...]:
    """x86-64-vN subdirectories the CPU supports, best first (from /proc/cpuinfo flags)."""
    try:
        from mltools.env import isa_level_from_flags
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    level = isa_level_from_flags(set(line.split(":", 1)[1].split()))
                    break
            else:
                level = 1
    except Exception:   # noqa: BLE001 - no cpuinfo: baseline only
        level = 1
    return tuple(f"x86-64-v{n}" for n in (4, 3, 2) if n <= (level or 1))


@functools.lru_cache(maxsize=None)
def host_loader_config() -> LoaderConfig:
    """The host loader's configuration, asked once per process (two fast ld.so calls)."""
    interpreter = _find_interpreter()
    if not os.path.exists(interpreter):
        return _defaults(interpreter)
    cfg = _defaults(interpreter, hwcaps=())
    diag = {}
    res = _proc.run([interpreter, "--list-diagnostics"], timeout=10, lc_all_c=True)
    if res.returncode == 0:
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            if value.startswith('"') and value.endswith('"'):
                value = value[1:-1]
            diag[key] = value
    hres = _proc.run([interpreter, "--help"], timeout=10, lc_all_c=True)
    if hres.returncode != 0:
        cfg = replace(cfg, hwcaps_subdirs=_cpu_hwcaps_subdirs())
        if not diag:
            return cfg
    system_dirs, hwcaps, legacy_names, supported = _parse_help(hres.stdout if hres.returncode == 0 else "")
    diag_dirs = [v.rstrip("/") or "/" for k, v in sorted(
        ((k, v) for k, v in diag.items() if k.startswith("path.system_dirs[")),
        key=lambda kv: int(kv[0].split("[")[1].rstrip("]"), 16))]
    prefix = diag.get("path.sysconfdir", "/etc")
    return replace(
        cfg,
        system_dirs=tuple(diag_dirs or system_dirs or cfg.system_dirs),
        hwcaps_subdirs=tuple(hwcaps) if hres.returncode == 0 else cfg.hwcaps_subdirs,
        legacy_subdirs=legacy_subdir_combinations(legacy_names),
        dst_lib=diag.get("dl_dst_lib", cfg.dst_lib),
        platform=diag.get("dl_platform", cfg.platform),
        cache_path=f"{prefix}/ld.so.cache",
        preload_path=f"{prefix}/ld.so.preload",
        glibc_version=diag.get("version.version"),
        isa_level=_level(supported) if (hres.returncode == 0 and cfg.machine == 62) else 0,
        source=f"{interpreter} --list-diagnostics and --help" if diag else f"{interpreter} --help",
    )


def loader_config_for_root(root: Optional[str]) -> LoaderConfig:
    """The host configuration, or for a sysroot its defaults with every path under ``root``."""
    if root in (None, "", "/"):
        return host_loader_config()
    root = os.path.abspath(root)
    host = host_loader_config()
    cfg = _defaults(host.interpreter, root)
    return replace(cfg, hwcaps_subdirs=host.hwcaps_subdirs,
                   source=f"defaults for the sysroot {root} (the host's glibc-hwcaps levels)")


def _is_dst(text: str, i: int, name: str) -> int:
    """Length of the token ``name`` at text[i:] (after the '$'), 0 if it is not one."""
    if text.startswith("{" + name + "}", i):
        return len(name) + 2
    if text.startswith(name, i):
        nxt = text[i + len(name):i + len(name) + 1]
        if nxt and (nxt.isalnum() or nxt == "_") and nxt.isascii():
            return 0
        return len(name)
    return 0


def expand_dst(text: str, origin: Optional[str], cfg: LoaderConfig) -> Optional[str]:
    """Expand $ORIGIN, $LIB and $PLATFORM (and their ${} forms) in one path element.

    ``origin`` is the directory of the object the path belongs to. Returns None
    when the element must be dropped, as ld.so drops it when a known token has
    no value. Unknown ``$X`` stays literal.
    """
    if "$" not in text:
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        i += 1
        repl = None
        length = _is_dst(text, i, "ORIGIN")
        if length:
            repl = origin
        else:
            length = _is_dst(text, i, "PLATFORM")
            if length:
                repl = cfg.platform
            else:
                length = _is_dst(text, i, "LIB")
                if length:
                    repl = cfg.dst_lib
        if length and repl is None:
            return None
        if length:
            out.append(repl)
            i += length
        else:
            out.append("$")
    return "".join(out)


def split_search_path(value: str, separators: str = ":") -> Tuple[str, ...]:
    """Split like glibc's strsep: empty elements stay (they mean the current directory)."""
    if separators == ":":
        return tuple(value.split(":"))
    return tuple(re.split("[" + re.escape(separators) + "]", value))
