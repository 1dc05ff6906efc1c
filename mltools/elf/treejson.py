"""The JSON of dependency trees, fast enough for thousands of files.

:func:`tree_json` builds the same document as ``mltools._jsonio.document`` for a
:class:`~mltools.elf.ldtree.DepTree`, field by field (``tests`` compare them on
real files), and :class:`TreeJsonWriter` writes many trees as compact text,
encoding each library shared between trees once.
"""
from __future__ import annotations

import json

from mltools._record import fields, is_record
from mltools.elf.ldtree import ROOT_PLACEHOLDER, DepTree, Library, template_of

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, Tuple

__all__ = ["tree_json", "TreeJsonWriter", "shared_tree_text"]

_FIELDS: Dict[type, Tuple[str, ...]] = {}
# the placeholder for the root as it appears inside JSON text (no path holds a NUL)
_ROOT_TEXT = json.dumps(ROOT_PLACEHOLDER)[1:-1]


def _plain(obj):
    """A fast ``_jsonio.to_jsonable`` for the types a DepTree holds."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    names = _FIELDS.get(t)
    if names is None and is_record(obj):
        names = _FIELDS[t] = tuple(n for n in fields(obj) if not n.startswith("_"))
    if names is not None:
        return {n: _plain(getattr(obj, n)) for n in names}
    if t is tuple or t is list:
        return [_plain(x) for x in obj]
    from mltools import _jsonio
    return _jsonio.to_jsonable(obj)


def _library_json(lib: Library) -> dict:
    # Written out field by field: this runs for every library of every tree.
    return {
        "soname": lib.soname, "path": lib.path, "via": lib.via, "needed_by": list(lib.needed_by),
        "depth": lib.depth, "found_as": lib.found_as, "requested_as": list(lib.requested_as),
        "via_object": lib.via_object, "hwcaps_subdir": lib.hwcaps_subdir, "needed": list(lib.needed),
        "loader": lib.loader, "error": lib.error,
        "tried": [{"path": c.path, "outcome": c.outcome, "source": c.source, "reason": c.reason}
                  for c in lib.tried],
        "near_misses": [{"path": n.path, "reason": n.reason} for n in lib.near_misses],
    }


def tree_json(tree: DepTree) -> dict:
    """The ``mltools.elf.tree`` JSON document for ``tree`` (schema and version first)."""
    return {
        "schema": tree.SCHEMA, "version": tree.SCHEMA_VERSION, "root": tree.root,
        "libraries": [_library_json(lib) for lib in tree.libraries],
        "findings": [_plain(f) for f in tree.findings],
        "root_needed": list(tree.root_needed), "interpreter": tree.interpreter, "context": list(tree.context),
    }


def shared_tree_text(cache: dict, tree: DepTree, render, placeholder: str, root: str) -> str:
    """The text of a memoized tree (its root is ROOT_PLACEHOLDER: ``resolve_tree(shared=True)``)
    for the program ``root``: ``render(tree)`` once per tree (kept in ``cache``), then the root
    put in by text replacement of ``placeholder``, the placeholder as ``render`` writes it."""
    hit = cache.get(id(tree))
    if hit is None:
        hit = cache[id(tree)] = (tree, render(tree))
    return hit[1].replace(placeholder, root)


class TreeJsonWriter:
    """Compact JSON text of many trees, equal to ``json.dumps(tree_json(t), separators=(",", ":"))``.

    Trees memoized by a shared Resolver share their Library objects (or, where
    the root is named, the template they were copied from), so each distinct
    library is encoded once; a template's placeholder for the root is then
    replaced by the tree's root.
    """

    def __init__(self):
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode
        self._libs: Dict[int, Tuple[Library, str]] = {}   # id -> (library kept alive, its text)
        self._shared: Dict[int, Tuple[DepTree, str]] = {}  # id -> (memoized tree kept alive, its text)

    def shared_tree_text(self, tree: DepTree, root: str) -> str:
        """The JSON text of a memoized tree for the program ``root`` (:func:`shared_tree_text`)."""
        return shared_tree_text(self._shared, tree, self.tree_text, _ROOT_TEXT, self._dumps(root)[1:-1])

    def _library_text(self, lib: Library, root_text: str) -> str:
        tmpl = template_of(lib)
        key = lib if tmpl is None else tmpl
        hit = self._libs.get(id(key))
        if hit is None:
            hit = self._libs[id(key)] = (key, self._dumps(_library_json(key)))
        if tmpl is None:
            return hit[1]
        return hit[1].replace(_ROOT_TEXT, root_text)

    def tree_text(self, tree: DepTree) -> str:
        d = self._dumps
        root = d(tree.root)
        libs = ",".join([self._library_text(lib, root[1:-1]) for lib in tree.libraries])
        tail = d({"findings": [_plain(f) for f in tree.findings], "root_needed": list(tree.root_needed),
                  "interpreter": tree.interpreter, "context": list(tree.context)})
        return (f'{{"schema":{d(tree.SCHEMA)},"version":{tree.SCHEMA_VERSION},"root":{root},'
                f'"libraries":[{libs}],{tail[1:]}')
