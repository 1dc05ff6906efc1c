"""What a glibc dynamic loader is configured to do, read from the loader file itself.

The loader keeps its system search directories (``SYSTEM_DIRS``) and ``$LIB``
(``DL_DST_LIB``) as plain strings in its read-only data, next to its version
string and, up to glibc 2.36, the text of its "Legacy HWCAP subdirectories"
help. Reading them from the file gives the same answer as ``ld.so --help`` and
``--list-diagnostics`` without running anything, for any architecture: the
host's loader, the i386 loader beside it, or an aarch64 loader inside a
sysroot. What depends on the CPU (``$PLATFORM``, the legacy hwcap names, the
x86-64 levels of ``glibc-hwcaps``) follows glibc's own rules
(``sysdeps/x86/cpu-features.c``, ``elf/dl-hwcaps.c``) applied to
/proc/cpuinfo, unless GLIBC_TUNABLES is set (it can mask CPU features): then
the loader is asked (``--help``, ``--list-diagnostics``). For a CPU that is not
this one (an aarch64 sysroot on an x86-64 host) the usual CPU of that
architecture is assumed and ``source`` says so.

Three loaders are modelled: x86-64, i386 and aarch64 (:data:`ABIS`). An
object for any other machine is refused with the loader it would need
(:func:`abi_for`).

Also here: dynamic string token expansion (``$ORIGIN``, ``$LIB``,
``$PLATFORM``), exactly as ``elf/dl-load.c:_dl_dst_substitute`` does it.
"""
from __future__ import annotations

import os

from mltools._record import record, replace
from mltools.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, Optional, Sequence, Tuple

__all__ = ["LoaderConfig", "host_loader_config", "loader_config", "loader_config_for_root", "abi_of", "abi_for",
           "expand_dst", "split_search_path", "legacy_subdir_combinations", "read_loader_file", "ABIS",
           "DEFAULT_INTERPRETER", "root_realpath"]

# The loaders mltools models: ABI name -> (ELF class, e_machine, standard
# PT_INTERP, Debian multiarch triplet, ld.so.cache flags it accepts with the
# default one first). Cache flags: glibc 2.36 sysdeps/*/dl-cache.h
# _dl_cache_check_flags; i386 has none of its own, so the generic rule (ELF
# or libc6) applies.
ABIS: Dict[str, Tuple[int, int, str, str, Tuple[int, ...]]] = {
    "x86-64": (64, 62, "/lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu", (0x0303,)),
    "i386": (32, 3, "/lib/ld-linux.so.2", "i386-linux-gnu", (0x0003, 0x0001)),
    "aarch64": (64, 183, "/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu", (0x0A03,)),
}
_ABI_BY_MACHINE = {(v[0], v[1]): k for k, v in ABIS.items()}
DEFAULT_INTERPRETER = ABIS["x86-64"][2]


@record
class LoaderConfig:
    """The loader's fixed configuration; :func:`mltools._record.replace` it to simulate another host."""
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
    abi: str = "x86-64"                    # a key of ABIS
    cache_flags: Tuple[int, ...] = (0x0303,)   # ld.so.cache flags accepted, the default one first
    interpreter_found: bool = True         # the loader file exists (else the values are defaults)

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

    def accepts(self, elf_class: int, machine: int) -> bool:
        return elf_class == self.elf_class and machine == self.machine


# --- which loader an object needs ------------------------------------------------------------

# Loaders glibc has for machines mltools does not model (glibc shlib-versions):
# (ELF class, e_machine) -> [(e_flags mask, value, ABI name, loader)], first match wins.
_OTHER_LOADERS = {
    (32, 62): [(0, 0, "x32", "/libx32/ld-linux-x32.so.2")],
    (32, 40): [(0x400, 0x400, "armhf", "/lib/ld-linux-armhf.so.3"), (0, 0, "armel", "/lib/ld-linux.so.3")],
    (64, 21): [(0, 0, "ppc64", "/lib64/ld64.so.2 (little-endian) or /lib64/ld64.so.1")],
    (32, 20): [(0, 0, "powerpc", "/lib/ld.so.1")],
    (64, 22): [(0, 0, "s390x", "/lib/ld64.so.1")],
    (32, 22): [(0, 0, "s390", "/lib/ld.so.1")],
    (64, 243): [(0x6, 0x4, "riscv64 lp64d", "/lib/ld-linux-riscv64-lp64d.so.1"),
                (0, 0, "riscv64 lp64", "/lib/ld-linux-riscv64-lp64.so.1")],
    (32, 243): [(0x6, 0x4, "riscv32 ilp32d", "/lib/ld-linux-riscv32-ilp32d.so.1"),
                (0, 0, "riscv32 ilp32", "/lib/ld-linux-riscv32-ilp32.so.1")],
    (64, 8): [(0, 0, "mips64", "/lib64/ld.so.1")],
    (32, 8): [(0x20, 0x20, "mips n32", "/lib32/ld.so.1"), (0, 0, "mips", "/lib/ld.so.1")],
    (64, 258): [(0, 0, "loongarch64", "/lib64/ld-linux-loongarch-lp64d.so.1")],
    (64, 43): [(0, 0, "sparc64", "/lib64/ld-linux.so.2")],
    (32, 2): [(0, 0, "sparc", "/lib/ld-linux.so.2")],
    (32, 18): [(0, 0, "sparc", "/lib/ld-linux.so.2")],
    (64, 0x9026): [(0, 0, "alpha", "/lib/ld-linux.so.2")],
    (64, 50): [(0, 0, "ia64", "/lib/ld-linux-ia64.so.2")],
    (32, 4): [(0, 0, "m68k", "/lib/ld.so.1")],
    (32, 15): [(0, 0, "hppa", "/lib/ld.so.1")],
    (32, 42): [(0, 0, "sh", "/lib/ld-linux.so.2")],
    (32, 195): [(0, 0, "arc", "/lib/ld-linux-arc.so.2")],
    (32, 252): [(0, 0, "csky", "/lib/ld-linux-cskyv2.so.1")],
}


def abi_of(elf_class: int, machine: int) -> Optional[str]:
    """The key of :data:`ABIS` whose loader loads objects of this class and machine; None if none does."""
    return _ABI_BY_MACHINE.get((elf_class, machine))


def abi_for(elf_class: int, machine: int, e_flags: int = 0, interp: Optional[str] = None,
            what: str = "object") -> str:
    """The key of :data:`ABIS` whose loader loads such an object; UsageError (one line,
    naming the loader it would need) for a machine no modelled loader loads."""
    abi = abi_of(elf_class, machine)
    if abi is not None:
        return abi
    from mltools.elf.machines import machine_name

    name = machine_name(machine)
    options = _OTHER_LOADERS.get((elf_class, machine), ())
    label, loader = next(((lab, ld) for mask, value, lab, ld in options if (e_flags & mask) == value),
                         (None, None))
    if loader is None and interp:
        loader = interp
    kind = f"ELF{elf_class} {name}" + (f" ({label})" if label else "")
    modelled = ", ".join(ABIS)
    if loader is None:
        return _refuse(f"{what} is {kind}, for which mltools knows no glibc loader (it models {modelled})")
    return _refuse(f"{what} is {kind}: it needs the loader {loader}, which mltools does not model "
                   f"(it models {modelled})")


def _refuse(message: str) -> str:
    raise UsageError(message)


# --- reading a loader file ---------------------------------------------------------------------

def _first_dir_run(data: bytes) -> Tuple[str, ...]:
    """The first run of two or more NUL-separated absolute directories ending in '/'
    (SYSTEM_DIRS, from gen-trusted-dirs)."""
    start = 0
    while True:
        i = data.find(b"/\0/", start)
        if i < 0:
            return ()
        begin = data.rfind(b"\0", 0, i) + 1
        end = i + 2
        dirs = []
        pos = begin
        while pos < len(data) and data[pos:pos + 1] == b"/":
            stop = data.find(b"\0", pos)
            if stop < 0:
                break
            word = data[pos:stop]
            if not word.endswith(b"/") or not _plain_path(word):
                break
            dirs.append(word.decode("ascii"))
            pos = stop + 1
        if len(dirs) >= 2 and begin < end:
            return tuple(d.rstrip("/") or "/" for d in dirs)
        start = i + 1


def _plain_path(word: bytes) -> bool:
    return all(c in b"/._+-" or 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 for c in word)


def _version(data: bytes) -> Optional[str]:
    i = data.find(b" release version ")
    if i < 0:
        return None
    i += len(b" release version ")
    j = i
    while j < len(data) and (48 <= data[j] <= 57 or data[j] == 46):
        j += 1
    return data[i:j].rstrip(b".").decode("ascii") or None


def read_loader_file(path: str) -> Optional[dict]:
    """System directories, ``$LIB``, glibc version, cache and preload paths, and whether
    the loader searches legacy hwcap subdirectories, read from the loader file at ``path``
    (a host path). None when it cannot be read or is not a glibc loader."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(b"\x7fELF"):
        return None
    dirs = _first_dir_run(data)
    if not dirs:
        return None
    dst_lib = None
    first = dirs[0].strip("/")
    for cand in ((first,) if first else ()) + ("lib64", "libx32", "lib32", "lib"):
        if b"\0" + cand.encode() + b"\0" in data:
            dst_lib = cand
            break
    cache = "/etc/ld.so.cache"
    i = data.find(b"/ld.so.cache\0")
    if i > 0:
        cache = data[data.rfind(b"\0", 0, i) + 1:i + len(b"/ld.so.cache")].decode("ascii", "replace")
    return {
        "system_dirs": dirs,
        "dst_lib": dst_lib or "lib",
        "glibc_version": _version(data),
        "cache_path": cache,
        "preload_path": cache.rsplit("/", 1)[0] + "/ld.so.preload",
        # glibc 2.33..2.36 print this heading in --help; 2.37 removed the legacy subdirectories
        "legacy": b"Legacy HWCAP subdirectories" in data,
        "glibc_hwcaps": b"glibc-hwcaps" in data,
    }


def root_realpath(root: str, path: str) -> str:
    """The host path of target path ``path`` inside the sysroot ``root`` with every
    symlink resolved as the target would resolve it (absolute links stay in the root)."""
    base = root.rstrip("/")
    parts = [p for p in path.split("/") if p]
    out: list = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == ".":
            continue
        if p == "..":
            if out:
                out.pop()
            continue
        cand = base + "/" + "/".join(out + [p])
        try:
            target = os.readlink(cand)
        except OSError:
            out.append(p)
            continue
        hops += 1
        if hops > 40:                 # ELOOP: leave the rest as it is
            out.append(p)
            out.extend(parts)
            break
        if target.startswith("/"):
            out = []
        parts = [x for x in target.split("/") if x] + parts
    return base + "/" + "/".join(out)


# --- the CPU --------------------------------------------------------------------------------

def _host_abi() -> str:
    m = os.uname().machine
    return {"x86_64": "x86-64", "i686": "i386", "i586": "i386", "i386": "i386",
            "aarch64": "aarch64", "arm64": "aarch64"}.get(m, "x86-64")


def _cpu() -> dict:
    from mltools._sysfs import first_cpuinfo_block

    return first_cpuinfo_block()


def x86_cpu_traits(vendor: str, flags: set, sixty_four: bool = True) -> Tuple[str, Tuple[str, ...]]:
    """($PLATFORM, legacy hwcap names from the highest bit down) as glibc 2.36's
    ``init_cpu_features`` sets them for a CPU with these /proc/cpuinfo flags."""
    if not sixty_four:
        return "i686", ("sse2",) if "sse2" in flags else ()
    hw = ["x86_64"]
    platform = None
    if vendor == "GenuineIntel":
        if "avx512cd" in flags:
            if "avx512er" in flags:
                if "avx512pf" in flags:
                    platform = "xeon_phi"
            elif {"avx512bw", "avx512dq", "avx512vl"} <= flags:
                hw.insert(0, "avx512_1")          # HWCAP_X86_AVX512_1 is bit 2, x86_64 bit 1
        if platform is None and {"avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "popcnt"} <= flags:
            platform = "haswell"
    return platform or "x86_64", tuple(hw)


def legacy_subdir_combinations(platform: Optional[str], hwcap_names: Sequence[str], tls: bool = True
                               ) -> Tuple[str, ...]:
    """The legacy subdirectories glibc <= 2.36 tries in each directory, in its order.

    ``elf/dl-hwcaps.c:_dl_important_hwcaps`` combines "tls", the platform and
    the hwcap names (highest bit first), in that order within a path, most
    specific combination first (measured with LD_DEBUG=libs for i386:
    tls/i686/sse2, tls/i686, tls/sse2, tls, i686/sse2, i686, sse2).
    """
    comps = (["tls"] if tls else []) + ([platform] if platform else []) + list(hwcap_names)
    n = len(comps)
    out = []
    for mask in range((1 << n) - 1, 0, -1):
        out.append("/".join(comps[i] for i in range(n) if mask & (1 << (n - 1 - i))))
    return tuple(out)


def _kernel_version() -> Optional[Tuple[int, int, int]]:
    nums = []
    for part in os.uname().release.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        nums.append(int(digits))
        if len(digits) != len(part):
            break
    if len(nums) < 2:
        return None
    return (nums[0], nums[1], nums[2] if len(nums) > 2 else 0)


# --- building a configuration --------------------------------------------------------------

_configs: Dict[tuple, LoaderConfig] = {}


def loader_config(abi: str = "", root: Optional[str] = None, interpreter: Optional[str] = None) -> LoaderConfig:
    """The configuration of the ``abi`` loader (default: the host's), in ``root`` (default: /).

    ``interpreter`` is the PT_INTERP of the program being resolved (default:
    the ABI's standard loader). Computed once per process and arguments.
    """
    abi = abi or _host_abi()
    root = "/" if root in (None, "", "/") else os.path.abspath(root)
    key = (abi, root, interpreter)
    cfg = _configs.get(key)
    if cfg is None:
        cfg = _configs[key] = _build(abi, root, interpreter)
    return cfg


def host_loader_config() -> LoaderConfig:
    """The configuration of this machine's own loader (read once per process)."""
    return loader_config()


def loader_config_for_root(root: Optional[str], abi: Optional[str] = None) -> LoaderConfig:
    """The configuration of the loader in the sysroot ``root`` (the host's for None or /).

    Without ``abi``, the root's ABI is the host's if the root has that loader,
    else the first modelled ABI whose loader it has."""
    if root in (None, "", "/"):
        return loader_config(abi or "")
    if abi is None:
        host = _host_abi()
        base = os.path.abspath(root)
        order = [host] + [a for a in ABIS if a != host]
        abi = next((a for a in order if os.path.lexists(base + ABIS[a][2])), host)
    return loader_config(abi, root)


def _build(abi: str, root: str, interpreter: Optional[str]) -> LoaderConfig:
    elf_class, machine, std_interp, triplet, cache_flags = ABIS[abi]
    interp = interpreter or std_interp
    base = "" if root == "/" else root
    host_path = root_realpath(root, interp) if base else interp
    static = read_loader_file(host_path)
    native = _host_abi() == "x86-64" and abi in ("x86-64", "i386") or _host_abi() == abi
    cpu = _cpu() if native else {}
    # $PLATFORM and the legacy hwcap names
    if abi in ("x86-64", "i386"):
        flags = set(cpu.get("flags", "").split()) if native else {"sse2"}
        platform, hw_names = x86_cpu_traits(cpu.get("vendor_id", "") if native else "", flags, abi == "x86-64")
    else:   # aarch64: AT_PLATFORM is "aarch64"; HWCAP_ATOMICS (LSE) is the one important bit
        features = set(cpu.get("Features", "").split()) if native else {"atomics"}
        platform, hw_names = "aarch64", ("atomics",) if "atomics" in features else ()
    # glibc-hwcaps: x86-64 levels only (i386 and aarch64 have no subdirectories)
    hwcaps: Tuple[str, ...] = ()
    isa_level = 0
    if abi == "x86-64":
        from mltools._sysfs import isa_level_from_flags

        isa_level = isa_level_from_flags(set(cpu.get("flags", "").split())) if native else 0
        hwcaps = tuple(f"x86-64-v{n}" for n in (4, 3, 2) if n <= (isa_level or 1))
    tuned = False
    if native and static is not None and os.environ.get("GLIBC_TUNABLES"):
        # tunables (glibc.cpu.hwcaps=-AVX2, glibc.cpu.x86_...) change what the loader
        # sees of the CPU: then it is asked, as it would decide in this environment
        asked = _ask_cpu_traits(host_path)
        if asked is not None:
            tuned = True
            hwcaps, platform, hw_names, asked_level = asked
            isa_level = asked_level if abi == "x86-64" else 0
            if abi != "x86-64":
                hwcaps = ()
    if static is not None:
        dirs, dst_lib = static["system_dirs"], static["dst_lib"]
        legacy = legacy_subdir_combinations(platform, hw_names) if static["legacy"] else ()
        if not static["glibc_hwcaps"]:
            hwcaps = ()
        cache, preload, version = static["cache_path"], static["preload_path"], static["glibc_version"]
        source = f"read from {interp}" + (f" in {root}" if base else "") + (
            "; the CPU as it answers under GLIBC_TUNABLES" if tuned else "")
    else:
        if os.path.isdir(f"{base}/usr/lib/{triplet}") or os.path.isdir(f"{base}/lib/{triplet}"):
            dirs, dst_lib = (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib"), f"lib/{triplet}"
        elif elf_class == 64:
            dirs, dst_lib = ("/lib64", "/usr/lib64"), "lib64"
        else:
            dirs, dst_lib = ("/lib", "/usr/lib"), "lib"
        legacy = ()
        cache, preload, version = "/etc/ld.so.cache", "/etc/ld.so.preload", None
        source = f"defaults ({interp} cannot be read" + (f" in {root})" if base else ")")
    if not native:
        source += f"; a usual {abi} CPU assumed"
    return LoaderConfig(
        interpreter=interp, elf_class=elf_class, machine=machine, system_dirs=tuple(dirs),
        hwcaps_subdirs=hwcaps, legacy_subdirs=legacy, dst_lib=dst_lib, platform=platform,
        cache_path=cache, preload_path=preload, root=root, glibc_version=version, source=source,
        kernel_version=_kernel_version() if native else None, isa_level=isa_level, abi=abi,
        cache_flags=cache_flags, interpreter_found=static is not None)


def _ask_cpu_traits(loader: str):
    """(glibc-hwcaps searched, $PLATFORM, legacy hwcap names, x86-64 level) from the loader's
    own ``--help`` and ``--list-diagnostics`` in this environment; None if it cannot be asked."""
    from mltools import _proc

    helptext = _proc.run([loader, "--help"], timeout=10, lc_all_c=True)
    diag = _proc.run([loader, "--list-diagnostics"], timeout=10, lc_all_c=True)
    if helptext.returncode != 0 or diag.returncode != 0:
        return None
    platform = None
    for line in diag.stdout.splitlines():
        if line.startswith("dl_platform="):
            platform = line.split("=", 1)[1].strip('"')
    hwcaps, hw_names, levels = [], [], [1]
    section = None
    for line in helptext.stdout.splitlines():
        if line.startswith("Subdirectories of glibc-hwcaps"):
            section = "hwcaps"
        elif line.startswith("Legacy HWCAP subdirectories"):
            section = "legacy"
        elif not line.startswith("  "):
            section = None
        elif section is not None:
            name = line.split()[0]
            if section == "hwcaps" and "searched" in line:
                hwcaps.append(name)
            if section == "hwcaps" and "supported" in line and name.startswith("x86-64-v"):
                levels.append(int(name[len("x86-64-v"):]))
            if section == "legacy" and "searched" in line and "AT_PLATFORM" not in line and name != "tls":
                hw_names.append(name)
    return tuple(hwcaps), platform or "", tuple(hw_names), max(levels)


# --- dynamic string tokens --------------------------------------------------------------------

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
    for sep in separators[1:]:
        value = value.replace(sep, separators[0])
    return tuple(value.split(separators[0]))
