"""``elf tree`` over many files: resolved in one or several processes, encoded as they go.

Trees of many files are not kept as objects: each is turned into its compact
JSON (:class:`~mltools.elf.treejson.TreeJsonWriter`) or its text view as soon
as it is resolved, which is what lets a fork pool return them cheaply. The
result, :class:`TreeBatch`, is the whole document the command prints.
"""
from __future__ import annotations


from mltools._record import record
from mltools.elf.ldtree import ROOT_PLACEHOLDER, DepTree, DepTreeSet, Resolver, resolve_tree
from mltools.errors import InputError, UsageError
from mltools.findings import ItemError, require_some_processed

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import ClassVar, List, Mapping, Optional, Sequence, Tuple

__all__ = ["TreeBatch", "resolve_batch", "loader_env", "tree_batch"]

# Below this many files one process is faster than starting a pool (with -j N).
POOL_MIN_FILES = 64
# Without -j, a worker per this many files (at most the usable CPUs): each worker
# repeats the shared work (the cache, the libraries every program needs, the
# memoized trees), so a pool costs CPU, and on a busy machine wall time too (on 2
# loaded vCPUs, 1,881 files: 0.47 s CPU / 0.49 s wall in one process, 0.55 s /
# 0.54 s in two; docs/benchmarks.md).
FILES_PER_WORKER = 1000


@record
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
        import json

        errors = json.dumps([{"path": e.path, "message": e.message} for e in self.errors], separators=(",", ":"))
        return '{"schema":"%s","version":%d,"trees":[%s]%s}' % (
            self.SCHEMA, self.SCHEMA_VERSION, ",".join(self.items),
            f',"errors":{errors}' if self.errors else "")


def loader_env(pairs: Sequence[str] = (), ld_library_path: Optional[str] = None, inherit: bool = True) -> dict:
    """LD_LIBRARY_PATH and LD_PRELOAD as the program would see them: this process's (unless
    ``inherit`` is false), then ``KEY=VALUE`` pairs, then ``ld_library_path`` ('' for none).
    UsageError for a pair without '='."""
    import os

    env = {k: v for k, v in os.environ.items() if k in ("LD_LIBRARY_PATH", "LD_PRELOAD")} if inherit else {}
    for item in pairs:
        if "=" not in item:
            raise UsageError(f"--env expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        env[k] = v
    if ld_library_path is not None:
        env["LD_LIBRARY_PATH"] = ld_library_path
    return env


def _encode_one(tree: DepTree, fmt: str, flat: bool) -> str:
    if fmt == "json":
        from mltools import _jsonio
        return _jsonio.dumps(tree, tree.SCHEMA, tree.SCHEMA_VERSION)
    from mltools.elf.describe import render_tree
    return render_tree(tree, flat)


def _resolve_chunk(job) -> List[Tuple[str, str, bool]]:
    """(kind, payload, ok) per path: ("ok", encoded tree, tree.ok) or ("error", message, False)."""
    import os

    from mltools.elf.describe import render_tree
    from mltools.elf.treejson import TreeJsonWriter, shared_tree_text

    paths, kw, fmt, flat = job
    kw.setdefault("cwd", os.getcwd())             # one getcwd for the chunk, not one per file
    writer = TreeJsonWriter()
    # Programs that resolve as an earlier one did share its tree (Resolver's memo): it is
    # rendered once, with a placeholder for the root, which each program's text then gets.
    shared_texts: dict = {}
    resolver = Resolver(root=kw.pop("root", None), hwcaps_mask=kw.pop("hwcaps_mask", None))
    out = []
    for p in paths:
        try:
            tree = resolve_tree(p, resolver=resolver, shared=True, **kw)
        except (InputError, UsageError) as exc:
            out.append(("error", exc.message, False))
            continue
        if fmt == "json":
            text = writer.tree_text(tree) if tree.root != ROOT_PLACEHOLDER else writer.shared_tree_text(tree, p)
        elif tree.root != ROOT_PLACEHOLDER:
            text = render_tree(tree, flat)
        else:
            text = shared_tree_text(shared_texts, tree, lambda t: render_tree(t, flat), ROOT_PLACEHOLDER, p)
        out.append(("ok", text, tree.ok))
    return out


def resolve_batch(paths: Sequence[str], *, fmt: str = "json", flat: bool = False, jobs: Optional[int] = None,
                  env: Optional[Mapping[str, str]] = None, preload: Sequence[str] = (),
                  root: Optional[str] = None, hwcaps_mask: Optional[Sequence[str]] = None) -> TreeBatch:
    """Resolve every file of ``paths`` as ``resolve_tree`` does and encode the trees as ``fmt``.

    With at least :data:`POOL_MIN_FILES` files, the files are split in
    contiguous chunks over ``jobs`` forked processes (default: one per
    :data:`FILES_PER_WORKER` files, at most the usable CPUs), each with its
    own Resolver (so each reuses its caches); the output is the same. A file
    that cannot be resolved (not ELF, static, unreadable, a machine no
    modelled loader loads) is an ItemError and the others go on; when none
    can be, InputError.
    """
    from mltools._sysfs import usable_cpus

    if fmt not in ("json", "text"):
        raise ValueError(f"fmt must be json or text, not {fmt!r}")
    kw = {"env": dict(env or {}), "preload": tuple(preload), "root": root, "hwcaps_mask": hwcaps_mask}
    if len(paths) == 1:
        resolver = Resolver(root=root, hwcaps_mask=hwcaps_mask)
        tree = resolve_tree(paths[0], env=kw["env"], preload=kw["preload"], resolver=resolver)
        return TreeBatch(fmt, (_encode_one(tree, fmt, flat),), tree.ok, single=True)
    if jobs is None:
        jobs = min(usable_cpus(), len(paths) // FILES_PER_WORKER)
    n = max(1, min(jobs, len(paths))) if len(paths) >= POOL_MIN_FILES else 1
    size = -(-len(paths) // n)
    chunks = [(list(paths[i:i + size]), dict(kw), fmt, flat) for i in range(0, len(paths), size)]
    if n == 1:
        results = _resolve_chunk(chunks[0])
    else:
        import multiprocessing

        from mltools._lifecycle import worker_signals
        with multiprocessing.get_context("fork").Pool(n, initializer=worker_signals) as pool:
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


def tree_batch(paths: Sequence[str], *, env_pairs: Sequence[str] = (), ld_library_path: Optional[str] = None,
               clean_env: bool = False, preload: Sequence[str] = (), root: Optional[str] = None,
               hwcaps_mask: Optional[str] = None, flat: bool = False, jobs: Optional[int] = None,
               as_json: bool = False) -> TreeBatch:
    """``elf tree``'s work from its options, for the click command and the short path alike:
    the loader's variables (:func:`loader_env`), the hwcaps mask as typed ('a:b', '' for none),
    then :func:`resolve_batch`."""
    env = loader_env(env_pairs, ld_library_path, inherit=not clean_env)
    mask = None if hwcaps_mask is None else tuple(x for x in hwcaps_mask.split(":") if x)
    return resolve_batch(list(paths), fmt="json" if as_json else "text", flat=flat, jobs=jobs, env=env,
                         preload=preload, root=root, hwcaps_mask=mask)
