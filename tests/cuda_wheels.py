"""Real CUDA wheels from PyPI for the CUDA tests, downloaded once and cached.

The wheels (about 300 MB) go to ``$MLTOOLS_TEST_CACHE/wheels`` (default
``~/.cache/mltools-tests/wheels``); a test that needs one and cannot download
it (no network) is skipped with the reason. Environments are made with
``python -m venv --without-pip`` and the wheels unpacked into their
site-packages, RECORD included, as pip would leave them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Dict, Sequence

import pytest

# read at import: the autouse fixture of conftest scrubs MLTOOLS_* for each test
CACHE = Path(os.environ.get("MLTOOLS_TEST_CACHE") or Path.home() / ".cache" / "mltools-tests") / "wheels"

WHEELS: Dict[str, tuple] = {
    "cudart": ("nvidia-cuda-runtime-cu12", "12.9.79"),       # libcudart.so.12, 3.5 MB
    "nvjitlink": ("nvidia-nvjitlink-cu12", "12.9.86"),       # defines __nvJitLink*_12_0 ... _12_9, 40 MB
    "nvjitlink-old": ("nvidia-nvjitlink-cu12", "12.1.105"),  # stops at _12_1, 20 MB
    "cusparse": ("nvidia-cusparse-cu12", "12.3.1.170"),      # needs __nvJitLink*_12_4, and has GPU code, 207 MB
    "cufile": ("nvidia-cufile-cu12", "1.14.1.1"),            # GPU code: SASS sm_60-sm_86 + PTX compute_80, 1.2 MB
    "cuobjdump": ("nvidia-cuda-cuobjdump", "13.5.37"),       # the oracle for the GPU-code listing, 0.3 MB
    "pathfinder": ("cuda-pathfinder", "1.9.1"),              # CuPy's library loader (pure Python)
}


def wheel(key: str) -> Path:
    """The cached wheel file, downloaded with pip when missing (skips without a network)."""
    name, version = WHEELS[key]
    stem = name.replace("-", "_") + f"-{version}-"
    CACHE.mkdir(parents=True, exist_ok=True)
    hits = sorted(CACHE.glob(stem + "*.whl"))
    if hits:
        return hits[0]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
         "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--dest", str(CACHE),
         f"{name}=={version}"], capture_output=True, text=True, timeout=1800)
    hits = sorted(CACHE.glob(stem + "*.whl"))
    if proc.returncode != 0 or not hits:
        pytest.skip(f"needs the wheel {name}=={version} from PyPI: {proc.stderr.strip()[-300:]}")
    return hits[0]


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def make_env(dest: Path, keys: Sequence[str]) -> Path:
    """A venv at ``dest`` with the wheels ``keys`` unpacked into it; returns its python."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(dest)
    site = site_packages(dest)
    for key in keys:
        with zipfile.ZipFile(wheel(key)) as zf:
            for info in zf.infolist():
                zf.extract(info, site)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(site / info.filename, mode)
    return dest / "bin" / "python"


def cuobjdump() -> Path:
    """The cuobjdump program of the nvidia-cuda-cuobjdump wheel (unpacked once into the cache)."""
    target = CACHE.parent / "cuobjdump"
    exe = next(iter(sorted(target.glob("**/bin/cuobjdump"))), None)
    if exe is None:
        with zipfile.ZipFile(wheel("cuobjdump")) as zf:
            zf.extractall(target)
        exe = next(iter(sorted(target.glob("**/bin/cuobjdump"))), None)
        if exe is None:
            pytest.skip("the nvidia-cuda-cuobjdump wheel has no bin/cuobjdump")
        exe.chmod(0o755)
    return exe
