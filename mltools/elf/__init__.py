"""ELF files and glibc's dynamic loader, read statically (nothing is run).

- :mod:`mltools.elf.reader`: a fast struct/mmap ELF reader (header, PT_INTERP,
  PT_DYNAMIC, dynamic symbols with GNU versions, notes).
- :mod:`mltools.elf.ldso`: the host loader's configuration and ``$ORIGIN``
  expansion.
- :mod:`mltools.elf.inspect`: the ``elf inspect`` report.
- :mod:`mltools.elf.trace` / :mod:`mltools.elf.lddebug`: ``elf trace``, LD_DEBUG runs parsed.
"""
from mltools.elf.inspect import ElfInspection, InspectReport, demangle, inspect_file, inspect_files
from mltools.elf.ldso import LoaderConfig, expand_dst, host_loader_config, loader_config_for_root
from mltools.elf.reader import (
    DynamicSymbol, ElfFormatError, ElfInfo, ElfNotes, ElfSymbols, VersionDef, VersionNeed,
    looks_like_elf, read_elf, read_notes, read_symbols,
)

__all__ = [
    "DynamicSymbol", "ElfFormatError", "ElfInfo", "ElfInspection", "ElfNotes", "ElfSymbols",
    "InspectReport", "LoaderConfig", "VersionDef", "VersionNeed", "demangle", "expand_dst",
    "host_loader_config", "inspect_file", "inspect_files", "loader_config_for_root",
    "looks_like_elf", "read_elf", "read_notes", "read_symbols",
]
