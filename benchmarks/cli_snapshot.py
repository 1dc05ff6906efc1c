"""Record what every command prints on fixed inputs, and compare two records.

A check of behaviour across a refactoring, run by hand (not by pytest):

    python benchmarks/cli_snapshot.py record /tmp/snap-before
    ... change the code ...
    python benchmarks/cli_snapshot.py record /tmp/snap-after
    python benchmarks/cli_snapshot.py compare /tmp/snap-before /tmp/snap-after

``record DIR REGEX`` records only the cases whose name matches REGEX.

Each case runs ``python -m mltools ARGS`` in a child process and keeps its
exit status, stdout and stderr. Fields that hold times, PIDs or measurements
are replaced by a placeholder before the comparison (see ``VOLATILE``), so
everything else must be byte-identical. The inputs are this machine's files
(/bin, /usr/lib, the running venv), the sysfs dumps in ../shared/fixtures and
a few C fixtures compiled once into ``<dir>/../cli-snapshot-fixtures``
(kept, so that both records read the same bytes).
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# JSON keys whose values change from run to run.
VOLATILE = re.compile(
    r"(elapsed|_s$|_ms$|_ns$|timings|pid|took|load_?avg|uptime|started|finished|timestamp|"
    r"wall|cpu_time|seconds|per_s|gib_s|gb_s|bandwidth|latency|throughput|ratio|speed|mfu|"
    r"images_per|rate|time|best|median|mean|stdev|spread|min$|max$|raw_dir|ld_debug_dir|tmp|available|^tid$|"
    r"calls_per_batch)",
    re.I)
TEXT_VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)?\s*(s|ms|us|µs|ns)\b"), "<time>"),
    (re.compile(r"\bpid \d+|\[\d+\]|\bld\.\d+\b"), "<pid>"),
    (re.compile(r"0x[0-9a-f]{6,}"), "<addr>"),
    (re.compile(r"/tmp/[\w.-]+"), "<tmp>"),
    (re.compile(r"[\d.]+ GiB available"), "<mem> available"),
]


def _fixtures(base: Path) -> dict:
    """A few ELF fixtures (a missing library, an RPATH, a library) built once."""
    d = base
    d.mkdir(parents=True, exist_ok=True)
    out = {"dir": str(d)}
    srcs = {
        "libdep.c": "int dep(void){return 1;}\n",
        "libuse.c": "int dep(void); int use(void){return dep()+1;}\n",
        "main.c": "int use(void); int main(void){return use()-2;}\n",
        "missing.c": "int nowhere(void); int main(void){return nowhere();}\n",
        "alloc.c": ("#include <stdlib.h>\n#include <stdio.h>\nint main(void){for(int i=0;i<5;i++){"
                    "void*p=malloc(100+i);if(!p){puts(\"oom\");return 3;}free(p);}return 0;}\n"),
    }
    for name, text in srcs.items():
        p = d / name
        if not p.exists():
            p.write_text(text)

    def cc(*args: str) -> None:
        subprocess.run(["gcc", *args], cwd=d, check=True)

    if not (d / "main").exists():
        os.makedirs(d / "lib", exist_ok=True)
        os.makedirs(d / "gone", exist_ok=True)
        cc("-shared", "-fPIC", "-o", "lib/libdep.so", "libdep.c")
        cc("-shared", "-fPIC", "-o", "lib/libuse.so", "libuse.c", "-Llib", "-ldep", "-Wl,-rpath,$ORIGIN")
        cc("-o", "main", "main.c", "-Llib", "-luse", "-ldep", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib")
        cc("-shared", "-fPIC", "-o", "gone/libnowhere.so", "libdep.c")
        subprocess.run(["sh", "-c", "echo 'int nowhere(void){return 0;}' > gone/n.c && "
                        "gcc -shared -fPIC -o gone/libnowhere.so gone/n.c"], cwd=d, check=True)
        cc("-o", "missing", "missing.c", "-Lgone", "-lnowhere")
        os.remove(d / "gone" / "libnowhere.so")
        cc("-O0", "-g", "-o", "alloc", "alloc.c")
        (d / "libfake.so").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    numa = d / "numa"
    if not numa.exists():
        src = REPO.parent / "shared" / "fixtures" / "sysfs"
        numa.mkdir()
        for tar in sorted(src.glob("*.tar.bz2")):
            with tarfile.open(tar) as tf:
                tf.extractall(numa / tar.name[:-len(".tar.bz2")])
    return out


def _site() -> str:
    import numpy
    return str(Path(numpy.__file__).parent.parent)


def cases(fx: dict):
    f = fx["dir"]
    site = _site()
    numpy_ext = sorted(glob.glob(f"{site}/numpy/_core/_multiarray_umath*.so"))[0]
    usr_bin = sorted(p for p in glob.glob("/usr/bin/*") if os.path.isfile(p) and not os.path.islink(p))[:120]
    libs = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/lib*.so*"))[:80]   # >= 64: the process pool
    yield "env", ["env", "--json"]
    yield "env-text", ["env"]
    yield "doctor", ["doctor", "--json"]
    yield "doctor-text", ["doctor"]
    yield "doctor-path", ["doctor", "--json", "--path", f, "--fail-on", "warning"]
    yield "doctor-python", ["doctor", "--json", "--python", sys.executable]
    yield "doctor-badpython", ["doctor", "--python", "/no/such/python"]
    yield "inspect", ["elf", "inspect", "--json", "/bin/ls", "/usr/lib/x86_64-linux-gnu/libc.so.6", numpy_ext]
    yield "inspect-text", ["elf", "inspect", "/bin/ls", f"{f}/main"]
    yield "inspect-symbols", ["elf", "inspect", "--json", "--symbols", f"{f}/lib/libuse.so"]
    yield "inspect-bad", ["elf", "inspect", f"{f}/libfake.so"]
    yield "tree-ls", ["elf", "tree", "--json", "/bin/ls"]
    yield "tree-ls-text", ["elf", "tree", "/bin/ls"]
    yield "tree-fixture", ["elf", "tree", "--json", f"{f}/main"]
    yield "tree-fixture-text", ["elf", "tree", f"{f}/main"]
    yield "tree-missing", ["elf", "tree", "--json", f"{f}/missing"]
    yield "tree-missing-text", ["elf", "tree", f"{f}/missing"]
    yield "tree-missing-flat", ["elf", "tree", "--flat", f"{f}/missing"]
    yield "tree-numpy", ["elf", "tree", "--json", numpy_ext]
    yield "tree-many", ["elf", "tree", "--json", *usr_bin[:40]]
    yield "tree-many-text", ["elf", "tree", *usr_bin[:40]]
    yield "tree-batch", ["elf", "tree", "--json", "-j", "2", *libs]
    yield "tree-batch-text", ["elf", "tree", "-j", "2", *libs]
    yield "tree-llp", ["elf", "tree", "--json", "--ld-library-path", f"{f}/lib:", f"{f}/main"]
    yield "ldcache", ["elf", "ldcache", "--json"]
    yield "ldcache-text", ["elf", "ldcache"]
    yield "scan", ["elf", "scan", "--json", f"{site}/numpy", f]
    yield "scan-text", ["elf", "scan", "--list", f"{site}/numpy", f]
    yield "scan-fail-warning", ["elf", "scan", "--fail-on", "warning", f]
    yield "check", ["elf", "check", "--json", "/bin/ls", f"{f}/main", f"{f}/missing"]
    yield "check-text", ["elf", "check", "/bin/ls", f"{f}/main", f"{f}/missing"]
    yield "check-ext", ["elf", "check", "--json", numpy_ext]
    yield "check-as-python", ["elf", "check", "--json", f"--as-python={sys.executable}", numpy_ext]
    yield "check-bad-python", ["elf", "check", "--as-python=/no/such/python", numpy_ext]
    yield "check-fail-on", ["elf", "check", "--fail-on", "UNDEFINED,warning", f"{f}/missing"]
    yield "check-bad-fail-on", ["elf", "check", "--fail-on", "bogus!", f"{f}/missing"]
    yield "trace", ["elf", "trace", "--json", "--", f"{f}/main"]
    yield "mallocfail", ["malloc-fail", "--json", "--fail-at", "2", "--", f"{f}/alloc"]
    yield "mallocfail-text", ["malloc-fail", "--fail-at", "2", "--", f"{f}/alloc"]
    yield "mallocfail-sweep", ["malloc-fail", "--json", "--sweep", "--", f"{f}/alloc"]
    yield "mallocfail-sweep-text", ["malloc-fail", "--sweep", "--no-fork", "-j", "1", "--", f"{f}/alloc"]
    yield "sum", ["bench", "sum", "--quick", "--json", "--methods", "naive,exact", "--dtype", "float64",
                  "--layout", "1d"]
    yield "shakeshake-params", ["bench", "shakeshake", "--params-only", "--json"]
    yield "shakeshake-params-text", ["bench", "shakeshake", "--params-only"]
    for root in sorted(glob.glob(f"{f}/numa/*/*")):
        name = Path(root).parent.name
        yield f"numa-{name}", ["bench", "numa", "--sysfs-root", root, "--topology-only", "--json"]
        yield f"numa-{name}-text", ["bench", "numa", "--sysfs-root", root, "--topology-only"]
    yield "numa-dry-run", ["bench", "numa", "--dry-run", "--json", "--quick"]
    yield "cython-rules", ["cython", "check", "--json", str(REPO / "tests/cython_cases/rules")]
    yield "cython-rules-text", ["cython", "check", str(REPO / "tests/cython_cases/rules")]
    yield "cython-github", ["cython", "check", "--format", "github", str(REPO / "tests/cython_cases/rules")]
    yield "cython-broken", ["cython", "check", "--json", str(REPO / "tests/cython_cases/broken")]
    yield "cython-project", ["cython", "check", "--json", "-I", str(REPO / "tests/cython_cases/project/decls"),
                             str(REPO / "tests/cython_cases/project/src")]
    yield "cython-demo", ["cython", "demo", "--json"]


def _normalize_json(obj, volatile_numbers: bool):
    if isinstance(obj, dict):
        return {k: ("<volatile>" if VOLATILE.search(k) else _normalize_json(v, volatile_numbers))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalize_json(v, volatile_numbers) for v in obj]
    if volatile_numbers and isinstance(obj, float):
        return "<float>"
    if isinstance(obj, str):
        return _normalize_text(obj)
    return obj


def _normalize_text(text: str) -> str:
    for pat, repl in TEXT_VOLATILE:
        text = pat.sub(repl, text)
    return text


def record(out: Path, only: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    fx = _fixtures(out.parent / "cli-snapshot-fixtures")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MLTOOLS_"))}
    env["COLUMNS"] = "100"
    # where the mltools package is (its shim paths appear in reports): one placeholder
    pkg = subprocess.run([sys.executable, "-c", "import mltools, os; print(os.path.dirname(mltools.__file__))"],
                         capture_output=True, text=True, env=env, cwd=fx["dir"], check=True).stdout.strip()
    TEXT_VOLATILE.append((re.compile(re.escape(pkg)), "<mltools>"))
    for name, args in cases(fx):
        if only and not re.search(only, name):
            continue
        res = subprocess.run([sys.executable, "-m", "mltools", *args], capture_output=True, text=True,
                             env=env, cwd=fx["dir"], timeout=900)
        volatile_numbers = args[0] in ("bench", "malloc-fail") or args[:2] == ["elf", "trace"]
        try:
            body = json.dumps(_normalize_json(json.loads(res.stdout), volatile_numbers), indent=1,
                              sort_keys=False)
        except ValueError:
            body = _normalize_text(res.stdout)
        (out / f"{name}.out").write_text(f"exit {res.returncode}\n--- stdout\n{body}\n--- stderr\n"
                                         f"{_normalize_text(res.stderr)}")
        print(f"{name}: exit {res.returncode}", file=sys.stderr)


def compare(a: Path, b: Path) -> int:
    import difflib
    bad = 0
    names = sorted({p.name for p in b.glob("*.out")})
    for n in names:
        ta = (a / n).read_text() if (a / n).exists() else "(absent)\n"
        tb = (b / n).read_text() if (b / n).exists() else "(absent)\n"
        if ta != tb:
            bad += 1
            print(f"=== {n} differs")
            sys.stdout.writelines(list(difflib.unified_diff(ta.splitlines(True), tb.splitlines(True),
                                                            str(a / n), str(b / n), n=2))[:80])
    print(f"{len(names) - bad} of {len(names)} cases identical")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "record":
        record(Path(sys.argv[2]).resolve(), *sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
