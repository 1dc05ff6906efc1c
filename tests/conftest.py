"""Shared test fixtures.

- ``cli``: run the mltools command in-process (click's CliRunner, stdout and
  stderr kept apart).
- an autouse fixture that scrubs LD_*, MLTOOLS_* and PYTHONMALLOC, so a
  developer's shell cannot change what a test sees, and points XDG_CACHE_HOME
  into pytest's cache directory.
- ``cbuild``: compiles small C programs and libraries with gcc into a temp dir
  once per test run (binaries are never committed).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest
from click.testing import CliRunner

SCRUBBED_PREFIXES = ("LD_", "MLTOOLS_")
SCRUBBED_NAMES = ("PYTHONMALLOC",)


def _has_cuda() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("gpu") for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def _xdg_cache_home(request, tmp_path_factory) -> str:
    cache = getattr(request.config, "cache", None)     # None under -p no:cacheprovider
    return str(cache.mkdir("xdg-cache") if cache is not None else tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(autouse=True)
def _scrub_environment(monkeypatch, _xdg_cache_home):
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES) or name in SCRUBBED_NAMES:
            monkeypatch.delenv(name, raising=False)
    # mltools' result cache (doctor's CPU-instruction scan) lives in pytest's own cache dir,
    # kept between runs, never in the developer's ~/.cache
    monkeypatch.setenv("XDG_CACHE_HOME", _xdg_cache_home)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: Optional[BaseException]

    def json(self):
        return json.loads(self.stdout)


class CliInvoker:
    def __init__(self):
        self._runner = CliRunner()

    def __call__(self, *args: str, input: Optional[str] = None, env=None) -> CliResult:
        from mltools.cli import cli

        res = self._runner.invoke(cli, [str(a) for a in args], input=input, env=env,
                                  prog_name="mltools")
        exc = res.exception if not isinstance(res.exception, SystemExit) else None
        return CliResult(res.exit_code, res.stdout, res.stderr, exc)


@pytest.fixture
def cli() -> CliInvoker:
    return CliInvoker()


class CBuilder:
    """Compile C sources with gcc; results are cached by content for the session."""

    def __init__(self, root: Path):
        self.root = root
        self.cc = shutil.which("gcc") or shutil.which("cc")

    def build(self, name: str, source: str, *, shared: bool = False,
              flags: Sequence[str] = (), libs: Sequence[str] = (),
              lang: str = "c", subdir: str = "") -> Path:
        """Build ``source`` into ``<root>/<subdir>/<name>`` and return its path."""
        if self.cc is None:
            pytest.skip("no C compiler")
        compiler = self.cc if lang == "c" else (shutil.which("g++") or pytest.skip("no g++"))
        key = hashlib.sha256(repr((name, source, shared, tuple(flags), tuple(libs), lang, subdir)).encode()).hexdigest()[:16]
        outdir = self.root / key / subdir if subdir else self.root / key
        out = outdir / name
        if out.exists():
            return out
        outdir.mkdir(parents=True, exist_ok=True)
        src = outdir / (name.replace("/", "_") + (".c" if lang == "c" else ".cc"))
        src.write_text(source)
        argv = [compiler, "-o", str(out), str(src), *flags]
        if shared:
            argv[1:1] = ["-shared", "-fPIC"]
        argv += list(libs)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {name} failed:\n{' '.join(argv)}\n{proc.stderr}")
        return out


@pytest.fixture(scope="session")
def cbuild(tmp_path_factory) -> CBuilder:
    return CBuilder(tmp_path_factory.mktemp("cbuild"))
