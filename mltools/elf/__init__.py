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
- :mod:`mltools.elf.treejson`: the fast JSON of trees; :mod:`mltools.elf.batch`:
  ``elf tree`` over many files, in several processes.
- :mod:`mltools.elf.describe`: the text view of every ``elf`` result.
"""
import importlib

# The names below are imported on first use (PEP 562), so that
# ``import mltools.elf.ldtree`` does not pay for inspect, ldcache and the rest.
_WHERE = {
    "ElfInspection": "inspect", "InspectReport": "inspect", "demangle": "inspect",
    "inspect_file": "inspect", "inspect_files": "inspect",
    "CacheEntry": "ldcache", "LdCache": "ldcache", "parse_ld_cache": "ldcache",
    "read_ld_cache": "ldcache", "read_ld_so_conf": "ldcache",
    "Candidate": "ldtree", "DepTree": "ldtree", "DepTreeSet": "ldtree", "Library": "ldtree",
    "NearMiss": "ldtree", "Resolver": "ldtree", "resolve_tree": "ldtree", "tree_json": "treejson",
    "LoaderConfig": "ldso", "expand_dst": "ldso", "host_loader_config": "ldso",
    "loader_config_for_root": "ldso",
    "DynamicSymbol": "reader", "ElfFormatError": "reader", "ElfInfo": "reader", "ElfNotes": "reader",
    "ElfSymbols": "reader", "VersionDef": "reader", "VersionNeed": "reader", "looks_like_elf": "files",
    "read_elf": "reader", "read_notes": "reader", "read_symbols": "reader",
    "ScanReport": "scan", "scan_paths": "scan",
}


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'mltools.elf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mltools.elf.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


__all__ = [
    "CacheEntry", "Candidate", "DepTree", "DepTreeSet", "LdCache", "Library", "NearMiss", "Resolver",
    "parse_ld_cache", "read_ld_cache", "read_ld_so_conf", "resolve_tree", "tree_json", "ScanReport",
    "scan_paths",
    "DynamicSymbol", "ElfFormatError", "ElfInfo", "ElfInspection", "ElfNotes", "ElfSymbols",
    "InspectReport", "LoaderConfig", "VersionDef", "VersionNeed", "demangle", "expand_dst",
    "host_loader_config", "inspect_file", "inspect_files", "loader_config_for_root",
    "looks_like_elf", "read_elf", "read_notes", "read_symbols",
]
