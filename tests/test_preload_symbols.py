"""Call-site names against gdb, the oracle.

gdb names a pc by the innermost function of the DWARF block that holds it
(separate debug files found by build-id included), else by the minimal
symbol ``info symbol`` gives, which must contain the pc; file:line comes from
``find_pc_line``. mltools must agree frame for frame: on its own stripped
library (where ``addr2line -f`` names the nearest preceding symbol), on a
stripped C++ program with its debug file under a build-id tree, on every
frame real programs (sqlite3, jq, xz, git) allocate from, and on the stack of
a real core dump.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from mltools.preload.records import Frame

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim"),
              pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb (the oracle)")]

_GDB_SCRIPT = r'''
import gdb, json
pcs = json.load(open(PCS))
out = {}
for pc in pcs:
    r = {"msym": None, "chain": [], "file": None, "line": None}
    s = gdb.execute("info symbol %#x" % pc, to_string=True).strip()
    if not s.startswith("No symbol"):
        r["msym"] = s.split(" in section")[0].split(" + ")[0].strip()
    try:
        b = gdb.block_for_pc(pc)
    except RuntimeError:
        b = None
    while b is not None and not b.is_static and not b.is_global:
        if b.function is not None:
            r["chain"].append(b.function.print_name)
        b = b.superblock
    sal = gdb.find_pc_line(pc)
    if sal.symtab is not None and sal.line:
        r["file"], r["line"] = sal.symtab.filename, sal.line
    out[str(pc)] = r
json.dump(out, open(OUT, "w"))
'''


def gdb_names(module, pcs, tmp_path, debug_dir="/usr/lib/debug"):
    """{pc: (name or None, file or None, line or None)} as gdb sees the module (pcs: link-time addresses)."""
    pcs_path, out_path, script = tmp_path / "pcs.json", tmp_path / "out.json", tmp_path / "o.py"
    pcs_path.write_text(json.dumps(sorted(set(pcs))))
    script.write_text(f"PCS={str(pcs_path)!r}\nOUT={str(out_path)!r}\n" + _GDB_SCRIPT)
    subprocess.run(["gdb", "-nx", "-batch", "-iex", f"set debug-file-directory {debug_dir}",
                    "-ex", f"source {script}", str(module)], check=True, capture_output=True, timeout=600)
    raw = json.loads(out_path.read_text())
    return {int(k): ((r["chain"][0] if r["chain"] else r["msym"]), r["file"], r["line"]) for k, r in raw.items()}


def _link_address(module, offset):
    from mltools.preload.symbols import Symbolizer
    mod = Symbolizer()._load(module)
    return offset + mod.base_vaddr


def _normal(name):
    if name is None:
        return None
    name = re.sub(r"\(.*$", "", name) if not name.startswith("operator") else name
    while name.startswith("__GI_"):
        name = name[5:]
    return name.replace(".localalias", "").lstrip("_")


def _aliases(module):
    """name -> addresses of the module's FUNC symbols (two names of one address are the same function)."""
    from mltools.preload.symbols import Symbolizer
    mod = Symbolizer()._load(module)
    table = defaultdict(set)
    for addr, name in zip(mod.named_addrs, mod.named):
        table[name].add(addr)
        table[_normal(name)].add(addr)
    return table


def _same(ours, theirs, aliases):
    if ours is None or theirs is None:
        return ours is None and theirs is None
    return _normal(ours) == _normal(theirs) or bool(aliases.get(ours, set()) & aliases.get(theirs, set())) \
        or bool(aliases.get(_normal(ours), set()) & aliases.get(_normal(theirs), set()))


def compare_with_gdb(frames, tmp_path, debug_dirs=("/usr/lib/debug",), exact=()):
    """Symbolize ``frames`` (return addresses) and compare every one with gdb; returns the mismatches."""
    from mltools.preload.symbols import symbolize
    ours = symbolize(frames, exact=exact, debug_dirs=debug_dirs)
    exact_keys = {(f.module, f.offset) for f in exact}
    by_module = defaultdict(set)
    for f in list(frames) + list(exact):
        by_module[f.module].add(f.offset)
    bad = []
    for module, offsets in by_module.items():
        pcs = {o: _link_address(module, o) - (0 if (module, o) in exact_keys else 1) for o in offsets}
        theirs = gdb_names(module, pcs.values(), tmp_path, ":".join(debug_dirs))
        aliases = _aliases(module)
        for o, pc in pcs.items():
            mine = ours.get((module, o), Frame(module, o))
            name, file, line = theirs[pc]
            if not _same(mine.function, name, aliases):
                bad.append((module, hex(o), mine.function, name))
            elif line and mine.location != f"{file}:{line}" and not (
                    mine.location and mine.location.endswith(f"{os.path.basename(file)}:{line}")):
                bad.append((module, hex(o), mine.location, f"{file}:{line}"))
    return bad


LIB_SRC = r"""#include <stdlib.h>
/* the nearest preceding exported symbol of the static function below */
int sw_small(int x) { return x + 1; }
static __attribute__((noinline)) void *sw_grow(size_t n) {
    void *p = malloc(n);
    return p;
}
void *sw_alloc(size_t n) { return sw_grow(n * 2); }
"""
LIB_MAIN = r"""#include <stdlib.h>
void *sw_alloc(size_t n);
int main(void) { void *p = sw_alloc(1234); if (!p) return 4; free(p); return 0; }
"""


def test_a_stripped_library_names_only_what_contains_the_address(cli, cbuild, tmp_path):
    lib = cbuild.build("libsymwrap.so", LIB_SRC, shared=True, flags=["-O1", "-fno-toplevel-reorder"],
                       subdir="lib")
    stripped = tmp_path / "libsymwrap.so"
    # as Debian packages do: global symbols stay, the static function's goes
    subprocess.run(["strip", "--strip-unneeded", "-o", str(stripped), str(lib)], check=True)
    prog = cbuild.build("symwrap_main", LIB_MAIN, libs=[f"-L{lib.parent}", "-lsymwrap"])
    env = {"LD_LIBRARY_PATH": str(tmp_path)}
    res = cli("malloc-fail", "--json", "--min-size", "2468", "--max-size", "2468", "--fail-at", "1", prog, env=env)
    assert res.exit_code == 4, res.stderr
    frames = [Frame(f["module"], f["offset"]) for f in res.json()["failures"][0]["frames"]]
    in_lib = [f for f in frames if f.module == str(stripped)]
    assert len(in_lib) == 2                           # sw_grow's call to malloc, sw_alloc's call to sw_grow
    named = {f["offset"]: f["function"] for f in res.json()["failures"][0]["frames"]}
    assert named[in_lib[0].offset] is None            # static: no symbol left
    assert named[in_lib[1].offset] == "sw_alloc"      # inside the exported symbol's extent
    assert compare_with_gdb(in_lib, tmp_path) == []
    # what addr2line says for the first: the nearest preceding symbol, which gdb rejects
    a2l = subprocess.run(["addr2line", "-f", "-e", str(stripped), hex(in_lib[0].offset - 1)],
                         capture_output=True, text=True).stdout.split()[0]
    assert a2l == "sw_small"


CXX_SRC = r"""#include <cstdlib>
namespace ns {
template <typename T> struct Box {
    T *make(std::size_t n) { return static_cast<T *>(std::malloc(n * sizeof(T))); }
};
}
static __attribute__((noinline)) int *grow(std::size_t n) { ns::Box<int> b; return b.make(n); }
static inline __attribute__((always_inline)) int *build(std::size_t n) { return grow(n + 1); }
int main(int argc, char **) {
    int *p = build(100 + static_cast<std::size_t>(argc));
    if (!p) return 3;
    std::free(p);
    return 0;
}
"""


def test_separate_debug_file_by_build_id(cli, cbuild, tmp_path):
    from mltools.elf.reader import read_notes
    prog = cbuild.build("symtest", CXX_SRC, flags=["-O2", "-g"], lang="c++")
    bid = read_notes(str(prog)).build_id
    root = tmp_path / "debugroot"
    (root / ".build-id" / bid[:2]).mkdir(parents=True)
    debug = root / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    subprocess.run(["objcopy", "--only-keep-debug", "--compress-debug-sections=zlib", str(prog), str(debug)],
                   check=True)
    stripped = tmp_path / "symtest"
    subprocess.run(["strip", "--strip-all", "-o", str(stripped), str(prog)], check=True)
    res = cli("malloc-fail", "--json", "--min-size", "408", "--max-size", "408", "--fail-at", "1", stripped)
    assert res.exit_code == 3, res.stderr
    frames = [Frame(f["module"], f["offset"]) for f in res.json()["failures"][0]["frames"]
              if f["module"] == str(stripped)]
    assert len(frames) >= 2
    assert compare_with_gdb(frames, tmp_path, debug_dirs=(str(root),)) == []
    from mltools.preload.symbols import symbolize
    names = [symbolize(frames, debug_dirs=(str(root),))[(f.module, f.offset)].function for f in frames]
    # grow tail-calls malloc, so the first return address is main's call of grow, inlined from
    # build: gdb and mltools name the innermost (inlined) function
    assert names[0] == "build"
    # without the debug tree gdb and mltools both have no name for the static code
    assert compare_with_gdb(frames, tmp_path, debug_dirs=(str(tmp_path / "none"),)) == []


def _traced_frames(argv, cwd=None):
    from mltools.mallocfail.config import FailSpec, RunOptions
    from mltools.mallocfail.report import traces_of
    from mltools.mallocfail.run import run_raw
    from mltools.preload.runner import private_dir
    from mltools.preload.target import resolve_target
    with private_dir("mf") as folder:
        raw = run_raw(argv, FailSpec(), RunOptions(), resolve_target(argv[0]), folder=folder, cwd=cwd,
                      extra_env={"MLTOOLS_MF_TRACE": "1"})
    seen = {}
    for t in traces_of(raw.records):
        for f in t.frames:
            if f.module.startswith("/") and "mallocfail/_shim" not in f.module:
                seen[(f.module, f.offset)] = f
    return list(seen.values())


@pytest.mark.parametrize("program", ["sqlite3", "jq", "xz", "git"])
def test_every_frame_of_a_real_program_as_gdb_names_it(program, tmp_path):
    exe = shutil.which(program)
    if exe is None:
        pytest.skip(f"needs {program}")
    data = tmp_path / "f.json"
    data.write_text(json.dumps({"a": list(range(50))}))
    cwd = None
    argv = {"sqlite3": [exe, ":memory:", "create table t(a); insert into t values(1); select * from t;"],
            "jq": [exe, ".", str(data)], "xz": [exe, "-c", "-k", str(data)],
            "git": [exe, "-C", str(tmp_path), "status", "--short"]}[program]
    if program == "git":
        subprocess.run([exe, "init", "-q", str(tmp_path)], check=True)
    frames = _traced_frames(argv, cwd)
    assert len(frames) > 20
    assert compare_with_gdb(frames, tmp_path) == []


CRASH_SRC = r"""#include <stdlib.h>
#include <string.h>
static __attribute__((noinline)) void fill(char *p, int n) { memset(p, 1, (size_t)n); }
static __attribute__((noinline)) char *make(int n) { char *p = malloc((size_t)n); fill(p, n); return p; }
int main(void) { char *p = make(4321); free(p); return 0; }
"""


def test_a_crash_stack_matches_gdb_on_the_core_dump(cli, cbuild, tmp_path, monkeypatch):
    import resource
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core dumps do not land in the working directory here ({pattern})")
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY and hard < (64 << 20):
        pytest.skip("core dumps are limited by the hard RLIMIT_CORE")
    prog = cbuild.build("crasher", CRASH_SRC, flags=["-O0", "-g"])
    monkeypatch.chdir(tmp_path)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    try:
        res = cli("malloc-fail", "--json", "--min-size", "4321", "--max-size", "4321", "--fail-at", "1", prog)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert res.exit_code == 139, res.stderr
    cores = [p for p in tmp_path.iterdir() if p.name.startswith("core")]
    if not cores:
        pytest.skip("no core file was written")
    bt = subprocess.run(["gdb", "-nx", "-batch", "-ex", "bt", str(prog), str(cores[0])], capture_output=True,
                        text=True, timeout=300).stdout
    bt = bt[bt.rindex("\n#0 "):]          # gdb shows frame 0 once on loading the core, then the backtrace
    gdb_frames = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(", bt, re.M)
    ours = [f["function"] for f in res.json()["crash_frames"]]
    # the same functions from the faulting pc (libc's memset variant) outwards
    assert gdb_frames[:4] == ours[:4], (bt, ours)
    assert ours[1:4] == ["fill", "make", "main"]
    doc = res.json()
    assert doc["crash_site"]["function"] == "fill"
    assert doc["crash_site"]["location"].endswith("crasher.c:3")
