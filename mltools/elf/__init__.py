"""ELF files and glibc's dynamic loader, read statically (nothing is run).

- :mod:`mltools.elf.reader`: a fast struct/mmap ELF reader (header, PT_INTERP,
  PT_DYNAMIC, dynamic symbols with GNU versions, notes).
- :mod:`mltools.elf.ldso`: the host loader's configuration and ``$ORIGIN``
  expansion.
- :mod:`mltools.elf.inspect`: the ``elf inspect`` report.
- :mod:`mltools.elf.trace` / :mod:`mltools.elf.lddebug`: ``elf trace``, LD_DEBUG runs parsed.
- :mod:`mltools.elf.ldcache`: ``/etc/ld.so.cache`` and ``ld.so.conf``.
- :mod:`mltools.elf.ldtree`: the static dependency resolver (``resolve_tree``,
  ``Resolver`` to share caches across many files, ``main``/``loaded`` for a
  process context such as the Python interpreter).
"""
from mltools.elf.inspect import ElfInspection, InspectReport, demangle, inspect_file, inspect_files
from mltools.elf.ldcache import CacheEntry, LdCache, parse_ld_cache, read_ld_cache, read_ld_so_conf
from mltools.elf.ldtree import Candidate, DepTree, DepTreeSet, Library, NearMiss, Resolver, resolve_tree
from mltools.elf.ldso import LoaderConfig, expand_dst, host_loader_config, loader_config_for_root
from mltools.elf.reader import (
    DynamicSymbol, ElfFormatError, ElfInfo, ElfNotes, ElfSymbols, VersionDef, VersionNeed,
    looks_like_elf, read_elf, read_notes, read_symbols,
)

__all__ = [
    "CacheEntry", "Candidate", "DepTree", "DepTreeSet", "LdCache", "Library", "NearMiss", "Resolver",
    "parse_ld_cache", "read_ld_cache", "read_ld_so_conf", "resolve_tree",
    "DynamicSymbol", "ElfFormatError", "ElfInfo", "ElfInspection", "ElfNotes", "ElfSymbols",
    "InspectReport", "LoaderConfig", "VersionDef", "VersionNeed", "demangle", "expand_dst",
    "host_loader_config", "inspect_file", "inspect_files", "loader_config_for_root",
    "looks_like_elf", "read_elf", "read_notes", "read_symbols",
]
