#!/usr/bin/env python3
"""`mltools cython check` on whole real projects: findings, errors, -j parity, time.

    python benchmarks/cython_trees.py prepare DIR [--mirrors DIR] [--sdists DIR] [--only NAME...]
    python benchmarks/cython_trees.py run DIR [--only NAME...] [--jobs N] [--report FILE.json]
    python benchmarks/cython_trees.py history DIR [--mirrors DIR]

`prepare` puts each project below DIR at the pinned commit (or release), with
the sources its build generates (Tempita templates, configure files, h5py's
api_gen), as the project's own build makes them:
  * git projects: from `--mirrors DIR/<owner>+<name>/repo` (a bare clone) when
    given, else `git clone` from GitHub; the pinned commit is extracted with
    `git archive`.
  * scikit-learn and pandas: their PyPI sdists (`--sdists DIR` holding the
    tarballs, else downloaded from PyPI's JSON API), checked against the sha256
    below. scikit-learn cimports scipy's .pxd files: `prepare` installs scipy
    (no dependencies) into DIR/_pylib, which `run` puts on PYTHONPATH.
  * h5py's api_gen needs the HDF5 headers (Debian: libhdf5-dev).

`run` checks every prepared tree twice as separate processes, with `-j 1` and
with `-j N` (default: the usable CPUs), as the project's build would (its -I,
-E, --cplus), and prints per tree: files, findings by code, files that could
not be checked, the warnings on stderr, CPU and wall time of each run, and
whether the two JSON documents are byte-identical. Exit status 1 when a tree
had an error or the two runs differ.

`history` checks the files a real fix commit changed, in the project's own
tree, at the commit before the fix and at the fix: what is flagged before,
and what is left after (the corpus of docs/cython.md, on the original code).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import timed  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mltools.env import describe_machine  # noqa: E402


@dataclass(frozen=True)
class Tree:
    name: str
    source: str                    # "git:owner/name@sha" or "sdist:project==version@sha256"
    root: str = "."                # where the check runs, inside the tree
    paths: Tuple[str, ...] = ()
    options: Tuple[str, ...] = ()
    keep: Tuple[str, ...] = ()     # git: only these paths of the repository
    pylib: bool = False            # needs DIR/_pylib (scipy's .pxd) on PYTHONPATH


CUPY_ENV = ("-E", "CUPY_CUDA_VERSION=12080", "-E", "CUPY_HIP_VERSION=0", "-E", "CUPY_USE_CUDA_PYTHON=0",
            "-E", "CUPY_CUFFT_STATIC=0", "-E", "CUPY_CYTHON_VERSION=3.3.1")
TREES = [
    # -E names from install/cupy_builder/_command.py; every module is C++.
    Tree("cupy", "git:cupy/cupy@6b6d9563c4f7410cd1866a11b2f71a60dd45a68c", ".", ("cupy", "cupy_backends"),
         ("-I", ".", "--cplus") + CUPY_ENV),
    Tree("numpy-random", "git:numpy/numpy@1f90bbb55e65e7de68921bc3f1a2d94492fdf689", ".", ("numpy/random",),
         ("-I", "."), keep=("numpy/random", "numpy/__init__.pxd", "numpy/__init__.cython-30.pxd")),
    Tree("pyarrow", "git:apache/arrow@515410b2a14ac766258e00b07eab9e5ee2692a62", "python", ("pyarrow",),
         ("-I", ".", "--cplus"), keep=("python",)),
    Tree("lxml", "git:lxml/lxml@ce6b446bb5a5464cfb9fa41c77554049bb055183", "src", ("lxml",),
         ("-I", ".", "-I", "lxml/includes")),
    Tree("h5py", "git:h5py/h5py@25a98242cf67db329ad3854cf92a1a4b0a6c4c65", ".", ("h5py",), ("-I", ".")),
    Tree("pyzmq", "git:zeromq/pyzmq@c6bc8f20d47f9e779d17137201939a31fcd457cc", ".", ("zmq",), ("-I", ".")),
    Tree("pyjnius", "git:kivy/pyjnius@4aa8be50cb57d18391dab7b5f4fe9b6c5b7fbfc9", ".", ("jnius",), ("-I", ".")),
    Tree("aiohttp", "git:aio-libs/aiohttp@495e778360d1924da63e16dba0f0d76baf56a56a", ".", ("aiohttp",),
         ("-I", "aiohttp"), keep=("aiohttp",)),
    Tree("pandas", "sdist:pandas==3.1.1@05fed3e3b7c99b226f160e29d7d6cb7ef39638c758cbfe42b3f24ba34f04b859",
         ".", ("pandas",), ("-I", ".")),
    # C++ modules are chosen in meson.build (no `# distutils: language` lines): --cplus for all.
    Tree("scikit-learn", "sdist:scikit-learn==1.9.1@629cada3e33e2b9bf376cdc7614a47a4140b8aedc1d836579e359736fbd82977",
         ".", ("sklearn",), ("-I", ".", "--cplus"), pylib=True),
]
SCIPY_FOR_PXD = "scipy==1.17.1"
# Refuse links and absolute paths in archives where Python can (3.11.4+).
_SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


# --- prepare ------------------------------------------------------------------------------

def _run(argv: Sequence[str], cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> None:
    subprocess.run(list(argv), cwd=cwd, env=env, check=True)


def _from_git(tree: Tree, dest: Path, mirrors: Optional[Path]) -> None:
    repo, sha = tree.source[len("git:"):].split("@")
    git_dir = mirrors / repo.replace("/", "+") / "repo" if mirrors else None
    if git_dir is None or not git_dir.is_dir():
        git_dir = dest.parent / f"_clone-{tree.name}.git"
        if not git_dir.is_dir():
            _run(["git", "clone", "--bare", "--filter=blob:none", f"https://github.com/{repo}", str(git_dir)])
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", sha, *tree.keep],
                             capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, **_SAFE)


def _from_sdist(tree: Tree, dest: Path, sdists: Optional[Path]) -> None:
    spec, digest = tree.source[len("sdist:"):].split("@")
    project, version = spec.split("==")
    stem = f"{project.replace('-', '_')}-{version}"
    tarball = sdists / f"{stem}.tar.gz" if sdists else None
    if tarball is None or not tarball.exists():
        meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/{project}/{version}/json", timeout=60))
        url = next(u["url"] for u in meta["urls"] if u["packagetype"] == "sdist")
        tarball = dest.parent / f"{stem}.tar.gz"
        with urllib.request.urlopen(url, timeout=600) as resp, open(tarball, "wb") as out:
            shutil.copyfileobj(resp, out)
    got = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if got != digest:
        raise SystemExit(f"{tarball}: sha256 {got}, expected {digest}")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest.parent / "_unpack", **_SAFE)
    shutil.move(str(dest.parent / "_unpack" / stem), dest)
    shutil.rmtree(dest.parent / "_unpack")


def _tempita(template: Path, target: Path, **namespace) -> None:
    from Cython import Tempita
    target.write_text(Tempita.sub(template.read_text(), **namespace), "utf-8")


def _generate(tree: Tree, dest: Path, top: Path) -> List[str]:
    """The sources each project's build generates before Cython runs; returns what was done."""
    done = []
    if tree.name == "numpy-random":
        for tmpl in dest.glob("numpy/random/*.pxd.in"):
            _tempita(tmpl, tmpl.with_suffix(""))
            done.append(str(tmpl.with_suffix("").relative_to(dest)))
    elif tree.name == "pyjnius":
        # setup.py writes jnius/config.pxi with the platform's DEFs.
        (dest / "jnius" / "config.pxi").write_text("DEF JNIUS_PLATFORM = 'linux'\n\n")
        done.append("jnius/config.pxi")
    elif tree.name == "aiohttp":
        # The Makefile compiles _websocket/reader_py.py as the module reader_c (against reader_c.pxd),
        # and tools/gen.py writes _headers.pxi from the istr constants of hdrs.py.
        ws = dest / "aiohttp" / "_websocket"
        shutil.copy(ws / "reader_py.py", ws / "reader_c.py")
        names = sorted(re.findall(r'^(\w+): Final\[istr\] = istr\("([^"]+)"\)',
                                  (dest / "aiohttp" / "hdrs.py").read_text(), re.M), key=lambda kv: kv[1])
        body = "".join(f"    hdrs.{value.upper().replace('-', '_')},\n" for _name, value in names)
        (dest / "aiohttp" / "_headers.pxi").write_text(f"from . import hdrs\ncdef tuple headers = (\n{body})\n")
        done += ["aiohttp/_websocket/reader_c.py", "aiohttp/_headers.pxi"]
    elif tree.name == "h5py":
        hdf5 = Path("/usr/lib/x86_64-linux-gnu/hdf5/serial")
        if not (hdf5 / "include" / "hdf5.h").exists():
            return ["api_gen NOT run: install libhdf5-dev (h5py's defs.pxd will be missing)"]
        env = dict(os.environ, HDF5_INCLUDEDIR=str(hdf5 / "include"), HDF5_LIBDIR=str(hdf5 / "lib"))
        _run([sys.executable, "-c", "import api_gen; api_gen.run()"], cwd=dest, env=env)
        import Cython
        import numpy
        cfg = {"MPI": False, "ROS3": False, "HDF5_VERSION": (1, 10, 8), "DIRECT_VFD": False,
               "VOL_MIN_HDF5_VERSION": (1, 11, 5), "COMPLEX256_SUPPORT": True,
               "NUMPY_BUILD_VERSION": numpy.__version__,
               "NUMPY_BUILD_VERSION_TUPLE": tuple(int(x) for x in numpy.__version__.split(".")[:3]),
               "CYTHON_BUILD_VERSION": Cython.__version__, "PLATFORM_SYSTEM": "Linux",
               "OBJECTS_USE_LOCKING": True, "OBJECTS_DEBUG_ID": False, "FREE_THREADING": False}
        for tmpl in sorted((dest / "h5py").glob("*.templ.*")):   # setup_build.py renders these
            _tempita(tmpl, tmpl.with_name(tmpl.name.replace(".templ", "")), **cfg)
            tmpl.unlink()
        done += ["api_gen (defs.pxd, _hdf5.pxd)", "h5py/*.templ.* rendered"]
    elif tree.name == "pandas":
        for tmpl in sorted(dest.rglob("*.pxi.in")):               # generate_pxi.py
            _tempita(tmpl, tmpl.with_suffix(""))
            done.append(str(tmpl.with_suffix("").relative_to(dest)))
    elif tree.name == "scikit-learn":
        for tmpl in sorted(dest.rglob("*.tp")):                   # sklearn/_build_utils/tempita.py
            _tempita(tmpl, tmpl.with_suffix(""))
        # meson configure_file: scipy 1.17's cython_blas has no blas_int, so it is int.
        (dest / "sklearn" / "utils" / "_blas_int.pxi").write_text("ctypedef int blas_int\n")
        done += ["sklearn/**/*.tp rendered", "sklearn/utils/_blas_int.pxi"]
        pylib = top / "_pylib"
        if not pylib.exists():
            _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(pylib), SCIPY_FOR_PXD])
            done.append(f"{SCIPY_FOR_PXD} into _pylib (its .pxd files)")
    return done


def prepare(top: Path, only: Sequence[str], mirrors: Optional[Path], sdists: Optional[Path]) -> int:
    top.mkdir(parents=True, exist_ok=True)
    for tree in TREES:
        if only and tree.name not in only:
            continue
        dest = top / tree.name
        if dest.exists():
            shutil.rmtree(dest)
        if tree.source.startswith("git:"):
            _from_git(tree, dest, mirrors)
        else:
            _from_sdist(tree, dest, sdists)
        done = _generate(tree, dest, top)
        print(f"{tree.name}: {tree.source}" + (f"; generated: {', '.join(done)}" if done else ""))
    return 0


# --- run ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    argv: List[str]
    returncode: int
    cpu_s: float
    wall_s: float
    stdout: str
    stderr: str
    doc: dict = field(default_factory=dict)


def _check(tree: Tree, top: Path, jobs: int) -> Outcome:
    argv = [sys.executable, "-m", "mltools", "cython", "check", "--json", "-j", str(jobs), *tree.options, *tree.paths]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")]
        + ([str(top / "_pylib")] if tree.pylib else [])))
    proc, wall, cpu = timed(argv, cwd=top / tree.name / tree.root, env=env)
    out = Outcome(argv, proc.returncode, cpu, wall, proc.stdout, proc.stderr)
    try:
        out.doc = json.loads(proc.stdout)
    except ValueError:
        pass
    return out


def run(top: Path, only: Sequence[str], jobs: int, report: Optional[Path]) -> int:
    from mltools._sysfs import usable_cpus
    jobs = jobs or usable_cpus()
    import Cython
    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.1f}; "
          f"Python {sys.version.split()[0]}; Cython {Cython.__version__}")
    status = 0
    rows = []
    for tree in TREES:
        if (only and tree.name not in only) or not (top / tree.name).is_dir():
            continue
        one = _check(tree, top, 1)
        many = _check(tree, top, jobs)
        doc = one.doc
        codes = collections.Counter(f["code"] for f in doc.get("findings", []))
        same = one.stdout == many.stdout and one.returncode == many.returncode
        warnings = [l for l in one.stderr.splitlines() if l.strip()]
        ok = one.returncode in (0, 1) and not doc.get("errors") and same
        status |= 0 if ok else 1
        rows.append({"tree": tree.name, "source": tree.source, "options": list(tree.options),
                     "paths": list(tree.paths), "files": doc.get("files_checked"),
                     "findings": dict(sorted(codes.items())), "errors": doc.get("errors"),
                     "warnings": warnings, "identical": same,
                     "j1": {"cpu_s": round(one.cpu_s, 2), "wall_s": round(one.wall_s, 2), "exit": one.returncode},
                     f"j{jobs}": {"cpu_s": round(many.cpu_s, 2), "wall_s": round(many.wall_s, 2),
                                  "exit": many.returncode}})
        print(f"\n{tree.name} ({tree.source}): {doc.get('files_checked')} files, "
              f"{sum(codes.values())} findings {dict(sorted(codes.items()))}, "
              f"{len(doc.get('errors') or [])} not checked, -j 1 and -j {jobs} "
              f"{'identical' if same else 'DIFFERENT'}")
        print(f"  -j 1: {one.cpu_s:6.2f} s CPU {one.wall_s:6.2f} s wall (exit {one.returncode}); "
              f"-j {jobs}: {many.cpu_s:6.2f} s CPU {many.wall_s:6.2f} s wall (exit {many.returncode})")
        for line in warnings:
            print(f"  stderr: {line[:300]}")
        for e in doc.get("errors") or []:
            print(f"  not checked: {e['message'][:300]}")
        for f in doc.get("findings", []):
            print(f"  {f['path']}:{f['line']}:{f['col']}: {f['code']} {f['severity']}"
                  f"{'' if f['verified'] else ' (not verified)'}: {f['message'][:160]}")
    if report is not None:
        report.write_text(json.dumps({"machine": describe_machine(), "jobs": jobs, "trees": rows}, indent=1))
    return status


# --- history: the fix commits of the corpus, on the projects' own code ---------------------

@dataclass(frozen=True)
class Fix:
    repo: str
    sha: str
    paths: Tuple[str, ...]
    options: Tuple[str, ...] = ()
    keep: Tuple[str, ...] = ()     # only these paths of the repository
    env_names: str = ""            # a regex: every name it finds in the sources is passed as -E NAME=1


FIXES = [
    Fix("cupy/cupy", "c8cb5883490fba3dd8eacd53a34a34ab67afb873", ("cupy/cuda/cufft.pyx",),
        ("-I", ".", "--cplus", "-E", "CUDA_VERSION=11020", "-E", "HIP_VERSION=0",
         "-E", "CUPY_USE_CUDA_PYTHON=0", "-E", "CUPY_CUFFT_STATIC=0"), keep=("cupy", "cupy_backends")),
    Fix("apache/mxnet", "758d529b48be4eedca286780a2e24f43fdec7d0c", ("python/mxnet/cython",),
        ("-I", "python/mxnet/cython"), keep=("python/mxnet/cython",)),
    Fix("kivy/pyjnius", "19b8a0bfcfe1d37df7af5bdcf5a5f18a3b53c2aa", ("jnius/jnius.pyx",),
        ("-I", ".", "-I", "jnius", "-E", "JNIUS_PLATFORM=linux", "-E", "JNIUS_PYTHON3=1"), keep=("jnius",)),
    Fix("zeromq/pyzmq", "7a417e2f42560bdfe22c48ec59775ab14cce327f", ("zmq/backend/cython",),
        ("-I", ".", "-I", "zmq/backend/cython", "-I", "zmq/utils"), keep=("zmq",)),
    Fix("numpy/numpy", "61783b4808a0325ef511003788553c3644ebf835",
        ("numpy/random/_generator.pyx", "numpy/random/mtrand.pyx"), ("-I", "."), keep=("numpy",)),
    Fix("grackle-project/grackle", "207b09985392615f4f63820475eafd49bf3432c9",
        ("src/python/pygrackle/grackle_wrapper.pyx",), ("-I", "src/python"), keep=("src/python",)),
    Fix("truenas/py-libzfs", "c0465725e73e9c8b4902b3d282e7661d2a4038bb", ("libzfs.pyx",),
        ("-I", ".", "-I", "pxd"), env_names=r"\b(?:HAVE_[A-Z0-9_]+|ADVISED)\b"),
    Fix("zeromq/pyzmq", "a878237e2fa09b192c0a6760588a9f82622cbddd", ("zmq/backend/cython/_zmq.py",), ("-I", "."), keep=("zmq",)),
    Fix("sparcians/map", "102a1199716bd8e33bc720bd42fab4651a11f276",
        ("helios/pipeViewer/pipe_view/core/src/core.pyx",),
        ("--cplus", "-I", "helios/pipeViewer/pipe_view/core/src"), keep=("helios/pipeViewer/pipe_view/core/src",)),
]


def history(top: Path, mirrors: Optional[Path]) -> int:
    top.mkdir(parents=True, exist_ok=True)
    for fix in FIXES:
        lines = {}
        for rev in (f"{fix.sha}^", fix.sha):
            tree = Tree(f"{fix.repo.split('/')[1]}-{rev.replace('^', '-before')[:20]}", f"git:{fix.repo}@{rev}",
                        keep=fix.keep)
            dest = top / tree.name
            if dest.exists():
                shutil.rmtree(dest)
            _from_git(tree, dest, mirrors)
            env_opts: List[str] = []
            if fix.env_names:
                names = set()
                for f in dest.rglob("*.p*"):
                    if f.suffix in (".pyx", ".pxd", ".pxi"):
                        names.update(re.findall(fix.env_names, f.read_text(errors="replace")))
                for n in sorted(names):
                    env_opts += ["-E", f"{n}=1"]
            argv = [sys.executable, "-m", "mltools", "cython", "check", "--json", "-j", "1", "--ignore", "CYP000",
                    *fix.options, *env_opts, *fix.paths]
            env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
            proc = subprocess.run(argv, cwd=dest, capture_output=True, text=True, env=env)
            try:
                doc = json.loads(proc.stdout)
            except ValueError:
                print(f"{fix.repo} {rev}: exit {proc.returncode}: {proc.stderr.strip()[:300]}")
                continue
            lines[rev] = [f"{f['path']}:{f['line']} {f['code']}" for f in doc["findings"]
                          if f["code"] not in ("CYP004",)]
        before, after = lines.get(f"{fix.sha}^", []), lines.get(fix.sha, [])
        print(f"{fix.repo} {fix.sha[:8]}: {len(before)} finding(s) before the fix, {len(after)} at the fix")
        for when, items in (("before", before), ("at fix", after)):
            for item in items:
                print(f"  {when:7s} {item}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir", type=Path)
    p.add_argument("--mirrors", type=Path)
    p.add_argument("--sdists", type=Path)
    p.add_argument("--only", nargs="*", default=())
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--only", nargs="*", default=())
    r.add_argument("--jobs", type=int, default=0)
    r.add_argument("--report", type=Path)
    h = sub.add_parser("history")
    h.add_argument("dir", type=Path)
    h.add_argument("--mirrors", type=Path)
    args = ap.parse_args()
    if args.cmd == "prepare":
        return prepare(args.dir.resolve(), args.only, args.mirrors, args.sdists)
    if args.cmd == "history":
        return history(args.dir.resolve(), args.mirrors)
    return run(args.dir.resolve(), args.only, args.jobs, args.report)


if __name__ == "__main__":
    sys.exit(main())
