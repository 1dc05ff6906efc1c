"""``elf tree`` over many files: resolved in one or several processes, encoded as they go.

Trees of many files are not kept as objects: each is turned into its compact
JSON (:class:`~mltools.elf.treejson.TreeJsonWriter`) or its text view as soon
as it is resolved, which is what lets a fork pool return them cheaply. The
result, :class:`TreeBatch`, is the whole document the command prints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, List, Mapping, Optional, Sequence, Tuple

from mltools.elf.ldtree import DepTree, DepTreeSet, Resolver, resolve_tree
from mltools.errors import InputError, UsageError
from mltools.findings import ItemError, require_some_processed

__all__ = ["TreeBatch", "resolve_batch"]

# Below this many files one process is faster than starting a pool.
POOL_MIN_FILES = 64


@dataclass(frozen=True)
class TreeBatch:
    """The dependency trees of one or more files, already encoded.

    One file: the ``mltools.elf.tree`` document (or its text). Several files:
    the ``mltools.elf.trees`` envelope, compact, with an ``errors`` list for
    the files that could not be resolved (or the texts, a blank line apart,
    an ``error:`` line in place of such a file).
    """
    SCHEMA: ClassVar[str] = DepTreeSet.SCHEMA
    SCHEMA_VERSION: ClassVar[int] = DepTreeSet.SCHEMA_VERSION
    fmt: str                        # "json" or "text"
    items: Tuple[str, ...]          # per file resolved (text: per file), in the order given
    ok: bool                        # every library of every tree found
    errors: Tuple[ItemError, ...] = ()
    single: bool = False            # one file: its own document, not the envelope

    def document(self) -> str:
        if self.fmt == "text":
            return "\n\n".join(self.items)
        if self.single:
            return self.items[0]
        errors = json.dumps([{"path": e.path, "message": e.message} for e in self.errors], separators=(",", ":"))
        return '{"schema":"%s","version":%d,"trees":[%s]%s}' % (
            self.SCHEMA, self.SCHEMA_VERSION, ",".join(self.items),
            f',"errors":{errors}' if self.errors else "")


def _encode_one(tree: DepTree, fmt: str, flat: bool) -> str:
    from mltools import _jsonio
    from mltools.elf.describe import render_tree

    if fmt == "json":
        return _jsonio.dumps(tree, tree.SCHEMA, tree.SCHEMA_VERSION)
    return render_tree(tree, flat)


def _resolve_chunk(job) -> List[Tuple[str, str, bool]]:
    """(kind, payload, ok) per path: ("ok", encoded tree, tree.ok) or ("error", message, False)."""
    from mltools.elf.describe import render_tree
    from mltools.elf.treejson import TreeJsonWriter

    paths, kw, fmt, flat = job
    writer = TreeJsonWriter()
    resolver = Resolver(root=kw.pop("root", None), hwcaps_mask=kw.pop("hwcaps_mask", None))
    out = []
    for p in paths:
        try:
            tree = resolve_tree(p, resolver=resolver, **kw)
        except (InputError, UsageError) as exc:
            out.append(("error", exc.message, False))
            continue
        out.append(("ok", writer.tree_text(tree) if fmt == "json" else render_tree(tree, flat), tree.ok))
    return out


def resolve_batch(paths: Sequence[str], *, fmt: str = "json", flat: bool = False, jobs: Optional[int] = None,
                  env: Optional[Mapping[str, str]] = None, preload: Sequence[str] = (),
                  root: Optional[str] = None, hwcaps_mask: Optional[Sequence[str]] = None) -> TreeBatch:
    """Resolve every file of ``paths`` as ``resolve_tree`` does and encode the trees as ``fmt``.

    With at least :data:`POOL_MIN_FILES` files, the files are split in
    contiguous chunks over ``jobs`` forked processes (default: the usable
    CPUs), each with its own Resolver (so each reuses its caches); the output
    is the same. A file that cannot be resolved (not ELF, static, unreadable)
    is an ItemError and the others go on; when none can be, InputError.
    """
    from mltools._sysfs import usable_cpus

    if fmt not in ("json", "text"):
        raise ValueError(f"fmt must be json or text, not {fmt!r}")
    kw = {"env": dict(env or {}), "preload": tuple(preload), "root": root, "hwcaps_mask": hwcaps_mask}
    if len(paths) == 1:
        resolver = Resolver(root=root, hwcaps_mask=hwcaps_mask)
        tree = resolve_tree(paths[0], env=kw["env"], preload=kw["preload"], resolver=resolver)
        return TreeBatch(fmt, (_encode_one(tree, fmt, flat),), tree.ok, single=True)
    n = max(1, min(jobs or usable_cpus(), len(paths))) if len(paths) >= POOL_MIN_FILES else 1
    size = -(-len(paths) // n)
    chunks = [(list(paths[i:i + size]), dict(kw), fmt, flat) for i in range(0, len(paths), size)]
    if n == 1:
        results = _resolve_chunk(chunks[0])
    else:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(n) as pool:
            results = [x for part in pool.map(_resolve_chunk, chunks, chunksize=1) for x in part]
    errors = [ItemError(path, payload) for path, (kind, payload, _ok) in zip(paths, results) if kind == "error"]
    require_some_processed(errors, len(paths), "files")
    if fmt == "text":
        from mltools.elf.describe import errors_text
        items = tuple(p if k == "ok" else errors_text([ItemError(path, p)])[0]
                      for path, (k, p, _o) in zip(paths, results))
    else:
        items = tuple(p for k, p, _o in results if k == "ok")
    return TreeBatch(fmt, items, all(ok for _k, _p, ok in results), tuple(errors))
