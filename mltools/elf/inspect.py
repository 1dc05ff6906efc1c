"""``inspect``: one view of what ``readelf -h -d -n -V -l`` shows piecemeal."""
from __future__ import annotations

import os

from mltools._record import record
from mltools._files import sha256_file
from mltools.elf.ldso import LoaderConfig, abi_of, expand_dst, host_loader_config, loader_config
from mltools.elf.reader import (
    DF_1_PIE, DF_TEXTREL, ElfInfo, dt_flags_1_names, dt_flags_names, read_elf, read_notes, read_symbols,
)
from mltools.elf.machines import machine_name
from mltools.errors import InputError
from mltools.findings import FailOn, Finding, ItemError, Severity, require_some_processed

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import ClassVar, List, Optional, Sequence, Tuple

__all__ = ["SearchPath", "SymbolEntry", "VersionNeedEntry", "ElfInspection", "InspectReport",
           "inspect_file", "inspect_files", "demangle", "empty_needed_finding"]


@record
class SearchPath:
    raw: str                        # as stored in DT_RPATH / DT_RUNPATH
    expanded: Tuple[Optional[str], ...]   # each element with $ORIGIN/$LIB/$PLATFORM expanded (None: dropped)


@record
class SymbolEntry:
    name: str
    demangled: str
    version: Optional[str]
    hidden: bool
    defined: bool
    binding: str
    type: str
    library: Optional[str] = None   # for undefined versioned symbols: the library verneed names


@record
class VersionNeedEntry:
    file: str
    versions: Tuple[str, ...]


@record
class ElfInspection:
    path: str
    realpath: str
    size_bytes: int
    sha256: str
    elf_class: int
    byte_order: str
    machine: str                    # a short name (x86-64, i386, aarch64...), else readelf's
    machine_code: int               # e_machine
    machine_name: str               # as readelf -h prints it ("Advanced Micro Devices X86-64")
    type: str
    osabi: int
    interpreter: Optional[str]
    soname: Optional[str]
    needed: Tuple[str, ...]
    rpath: Optional[SearchPath]
    runpath: Optional[SearchPath]
    flags: Tuple[str, ...]
    flags_1: Tuple[str, ...]
    build_id: Optional[str]
    abi_tag: Optional[str]
    x86_isa_level: Optional[int]
    x86_features: Tuple[str, ...]
    gnu_stack: Optional[str]
    relro: bool
    tls_size_bytes: Optional[int]
    version_needs: Tuple[VersionNeedEntry, ...]
    version_defs: Tuple[str, ...]
    defined_symbols: int
    undefined_symbols: int
    symbols: Optional[Tuple[SymbolEntry, ...]]
    findings: Tuple[Finding, ...]
    from_sections: Tuple[str, ...] = ()     # fields read from section headers (no program header has them)


@record
class InspectReport:
    SCHEMA: ClassVar[str] = "mltools.elf.inspect"
    SCHEMA_VERSION: ClassVar[int] = 1
    files: Tuple[ElfInspection, ...]
    errors: Tuple[ItemError, ...] = ()      # files that could not be read (the others still were)

    @property
    def failed(self) -> bool:
        """Exit status 1: a file could not be read or has an error finding."""
        return bool(self.errors) or FailOn().matches(f for fi in self.files for f in fi.findings)


def demangle(names: Sequence[str]) -> List[str]:
    """C++ demangling through ``c++filt`` (binutils), one process for all names.

    Names stay as they are when c++filt is not installed.
    """
    if not any(n.startswith("_Z") for n in names):
        return list(names)
    from mltools import _proc

    if _proc.which("c++filt") is None:
        return list(names)
    res = _proc.run(["c++filt"], input="\n".join(names) + "\n", timeout=60, lc_all_c=True)
    out = res.stdout.split("\n")
    if res.returncode != 0 or len(out) < len(names):
        return list(names)
    return out[:len(names)]


def _search_path(raw: Optional[str], origin: str, cfg: LoaderConfig) -> Optional[SearchPath]:
    if raw is None:
        return None
    return SearchPath(raw=raw, expanded=tuple(expand_dst(p, origin, cfg) if p else "" for p in raw.split(":")))


def _path_findings(info: ElfInfo, path: str) -> List[Finding]:
    out: List[Finding] = []
    if info.rpath is not None and info.runpath is not None:
        out.append(Finding("RPATH_IGNORED", Severity.WARNING,
                           f"{path} has both DT_RPATH and DT_RUNPATH: the loader ignores the RPATH",
                           fix="keep one (patchelf --remove-rpath, or relink with one --enable-new-dtags setting)",
                           details={"rpath": info.rpath, "runpath": info.runpath}))
    for tag, value in (("RPATH", info.rpath if info.runpath is None else None), ("RUNPATH", info.runpath)):
        if not value:
            continue
        for elem in value.split(":"):
            if elem == "":
                out.append(Finding("EMPTY_PATH_ELEMENT", Severity.WARNING,
                                   f"DT_{tag} {value!r} has an empty element: the loader searches the "
                                   "current directory there",
                                   fix="remove the empty element", details={"tag": tag, "value": value}))
            elif not elem.startswith("/") and not elem.startswith("$"):
                out.append(Finding("RELATIVE_RPATH", Severity.WARNING,
                                   f"DT_{tag} element {elem!r} is relative: it is resolved against the "
                                   "current directory of the process, not the library",
                                   fix="use $ORIGIN/" + elem, details={"tag": tag, "element": elem}))
    return out


def empty_needed_finding(who: str, details: dict) -> Finding:
    """EMPTY_NEEDED: ``who`` (a path, or an object as a tree names it) has a DT_NEEDED entry ""."""
    return Finding("EMPTY_NEEDED", Severity.WARNING,
                   f"{who} has an empty DT_NEEDED name: the loader matches it to the main program and "
                   "loads nothing (the file is corrupt or was edited)",
                   fix="rebuild the object, or remove the entry (patchelf --remove-needed '')", details=details)


def _name_findings(info: ElfInfo, path: str) -> List[Finding]:
    out: List[Finding] = []
    if "" in info.needed:
        out.append(empty_needed_finding(path, {"needed": list(info.needed)}))
    if info.soname == "":
        out.append(Finding("EMPTY_SONAME", Severity.WARNING,
                           f"{path} has an empty DT_SONAME: ldconfig cannot list it and no DT_NEEDED can name it "
                           "(the file is corrupt or was edited)", fix="relink with -Wl,-soname,NAME"))
    if info.truncated:
        debug = info.dynamic_size == 0
        out.append(Finding(
            "TRUNCATED", Severity.INFO if debug else Severity.ERROR,
            f"{path}: {info.truncated}"
            + (": a separate debug-info file (its PT_DYNAMIC is empty), not something to load" if debug
               else ": the loader dies of SIGBUS mapping it"),
            fix=None if debug else "replace the file with a complete copy"))
    if info.interp == "":
        out.append(Finding("EMPTY_INTERP", Severity.WARNING,
                           f"{path} has a PT_INTERP with no name: the kernel refuses to start it (ENOEXEC); "
                           "a separate debug-info file?"))
    return out


def _config_for(info: ElfInfo) -> LoaderConfig:
    """The loader configuration whose $LIB and $PLATFORM apply to ``info`` (the host's when no
    modelled loader loads it)."""
    abi = abi_of(info.elf_class, info.machine)
    return loader_config(abi) if abi is not None else host_loader_config()


def inspect_file(path: str, *, symbols: bool = False, cfg: Optional[LoaderConfig] = None) -> ElfInspection:
    """Everything ``inspect`` shows for one file. Raises ElfFormatError for a bad file.

    Fields come from the program headers, as the loader sees the file; what only
    section headers hold (a build-id no PT_NOTE covers, the version needs and
    symbols of an object without PT_DYNAMIC) is read from them, as readelf
    does, and ``from_sections`` names it."""
    info = read_elf(path, truncated_ok=True)
    cfg = cfg if cfg is not None and cfg.accepts(info.elf_class, info.machine) else _config_for(info)
    notes = read_notes(path, truncated_ok=True)
    syms = read_symbols(path, truncated_ok=True)
    abspath = os.path.abspath(path)
    real = os.path.realpath(path)
    # $ORIGIN: the realpath's directory for a program the kernel starts, the
    # directory of the path as given for a library (what the loader records).
    origin = os.path.dirname(real if info.interp else abspath)
    findings = _name_findings(info, path) + _path_findings(info, path)
    needed = set(info.needed)
    for vn in syms.version_needs:
        if vn.file not in needed:
            findings.append(Finding(
                "VERNEED_FILE_NOT_NEEDED", Severity.ERROR,
                f"version needs name {vn.file!r}, which is not a DT_NEEDED entry (a renamed NEEDED?): "
                "the loader fails its version check",
                fix="rename the verneed file too (patchelf --replace-needed does both)",
                details={"file": vn.file, "versions": list(vn.versions)}))
    if info.machine == 62 and cfg.isa_level and notes.x86_isa_needed and notes.x86_isa_needed > cfg.isa_level:
        findings.append(Finding(
            "ISA_LEVEL_ABOVE_CPU", Severity.ERROR,
            f"{path} needs x86-64-v{notes.x86_isa_needed}, this CPU is x86-64-v{cfg.isa_level}: the loader "
            "refuses it (CPU ISA level is lower than required)",
            fix="install a build for this CPU level, or ship it under glibc-hwcaps/x86-64-vN/ with a fallback",
            details={"needed": notes.x86_isa_needed, "cpu": cfg.isa_level}))
    if notes.gnu_stack == "RWX":
        findings.append(Finding("EXECSTACK", Severity.WARNING,
                                f"{path} asks for an executable stack (PT_GNU_STACK RWX)",
                                fix="link with -z noexecstack"))
    if info.flags & DF_TEXTREL:
        findings.append(Finding("TEXTREL", Severity.WARNING, f"{path} has text relocations (DF_TEXTREL)",
                                fix="compile with -fPIC"))
    entries = None
    if symbols:
        names = [s.name for s in syms.symbols]
        dem = demangle(names)
        entries = tuple(
            SymbolEntry(name=s.name, demangled=d, version=s.version, hidden=s.hidden, defined=s.defined,
                        binding=s.binding, type=s.type, library=s.version_file)
            for s, d in zip(syms.symbols, dem) if s.name)
    return ElfInspection(
        path=path, realpath=real, size_bytes=info.size, sha256=sha256_file(path),
        elf_class=info.elf_class, byte_order="little" if info.little_endian else "big",
        machine=info.machine_name, machine_code=info.machine, machine_name=machine_name(info.machine),
        # readelf 2.40: a DYN object is a position-independent executable when DF_1_PIE says so
        type=info.type_name + (" (PIE)" if info.type == 3 and info.flags_1 & DF_1_PIE else ""),
        osabi=info.osabi, interpreter=info.interp or None, soname=info.soname, needed=info.needed,
        rpath=_search_path(info.rpath, origin, cfg), runpath=_search_path(info.runpath, origin, cfg),
        flags=dt_flags_names(info.flags), flags_1=dt_flags_1_names(info.flags_1),
        build_id=notes.build_id, abi_tag=notes.abi_tag, x86_isa_level=notes.x86_isa_needed,
        x86_features=notes.x86_features, gnu_stack=notes.gnu_stack, relro=notes.relro,
        tls_size_bytes=notes.tls_memsz,
        version_needs=tuple(VersionNeedEntry(v.file, v.versions + v.weak) for v in syms.version_needs),
        version_defs=tuple(v.name for v in syms.version_defs if not v.base),
        defined_symbols=sum(1 for s in syms.symbols if s.defined and s.name),
        undefined_symbols=sum(1 for s in syms.symbols if not s.defined and s.name),
        symbols=entries, findings=tuple(findings),
        from_sections=tuple(dict.fromkeys(notes.from_sections + syms.from_sections)),
    )


def inspect_files(paths: Sequence[str], *, symbols: bool = False) -> InspectReport:
    """Every file that can be read; one that cannot is an ItemError, unless none can (InputError)."""
    files: List[ElfInspection] = []
    errors: List[ItemError] = []
    for p in paths:
        try:
            files.append(inspect_file(p, symbols=symbols))
        except InputError as exc:
            errors.append(ItemError(p, exc.message))
    require_some_processed(errors, len(paths), "files")
    return InspectReport(files=tuple(files), errors=tuple(errors))
