"""The fast tree JSON equals the ordinary JSON of the same dataclasses, on real files.

``elf tree`` writes one file's tree through ``mltools._jsonio`` and many trees
through ``mltools.elf.treejson``; a field added to ``Library`` must show up in
both. The corpus is every dynamic ELF file in /usr/bin and every shared object
of this venv's site-packages, resolved with one shared Resolver, so memoized
trees (templates) are exercised too.
"""
from __future__ import annotations

import glob
import json
import os
import sysconfig

import pytest

from mltools import _jsonio
from mltools.elf.batch import resolve_batch
from mltools.elf.ldtree import Resolver, resolve_tree, template_of
from mltools.elf.reader import ElfFormatError, read_elf
from mltools.elf.treejson import TreeJsonWriter, tree_json
from mltools.errors import InputError, UsageError


def _dynamic_elf_files():
    site = sysconfig.get_paths()["platlib"]
    paths = sorted(glob.glob("/usr/bin/*")) + sorted(glob.glob(f"{site}/**/*.so*", recursive=True))
    out = []
    for p in paths:
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        try:
            info = read_elf(p)
        except (ElfFormatError, InputError):
            continue
        if info.has_dynamic and info.elf_class == 64 and info.machine == 62:
            out.append(p)
    return out


CORPUS = _dynamic_elf_files()


@pytest.mark.skipif(len(CORPUS) < 100, reason="needs a /usr/bin and a venv with ELF files")
def test_fast_writer_equals_the_ordinary_json_on_usr_bin_and_the_venv():
    resolver = Resolver()
    writer = TreeJsonWriter()
    templated = 0
    for p in CORPUS:
        try:
            tree = resolve_tree(p, resolver=resolver)
        except (InputError, UsageError):
            continue
        ordinary = _jsonio.document(tree, tree.SCHEMA, tree.SCHEMA_VERSION)
        assert tree_json(tree) == ordinary, p
        text = writer.tree_text(tree)
        assert json.loads(text) == ordinary, p
        assert text == json.dumps(ordinary, separators=(",", ":")), p
        templated += any(template_of(lib) is not None for lib in tree.libraries)
    assert templated > 10          # memoized trees are part of what was compared


@pytest.mark.skipif(len(CORPUS) < 100, reason="needs a /usr/bin and a venv with ELF files")
def test_batch_document_is_the_envelope_of_the_single_documents():
    paths = CORPUS[:80]
    one_process = json.loads(resolve_batch(paths, fmt="json", jobs=1).document())
    two_processes = json.loads(resolve_batch(paths, fmt="json", jobs=2).document())
    assert one_process == two_processes
    assert one_process["schema"] == "mltools.elf.trees" and len(one_process["trees"]) == len(paths)
    for p, doc in zip(paths[:10], one_process["trees"]):
        single = json.loads(resolve_batch([p], fmt="json").document())
        assert doc == single
    text1 = resolve_batch(paths, fmt="text", jobs=1).document()
    assert text1 == resolve_batch(paths, fmt="text", jobs=2).document()


@pytest.mark.skipif(len(CORPUS) < 100, reason="needs a /usr/bin and a venv with ELF files")
def test_batch_of_shared_trees_equals_each_tree_written_alone():
    """resolve_batch writes a memoized tree once and puts each root in; every tree of the batch
    must still be what that program's own tree is, as JSON and as text."""
    from mltools.elf.describe import render_tree

    batch_json = json.loads(resolve_batch(CORPUS, fmt="json", jobs=1).document())
    batch_text = resolve_batch(CORPUS, fmt="text", jobs=1).document().split("\n\n")
    resolver = Resolver()
    trees = [resolve_tree(p, resolver=resolver) for p in CORPUS]
    assert batch_json["trees"] == [_jsonio.document(t, t.SCHEMA, t.SCHEMA_VERSION) for t in trees]
    assert "\n\n".join(batch_text) == "\n\n".join(render_tree(t) for t in trees)
    assert sum(any(template_of(lib) is not None for lib in t.libraries) for t in trees) > 100
