"""Our C (csrc/) builds clean with the strict warnings, as setup.py compiles it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
C_FILES = sorted((REPO / "csrc").rglob("*.c"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("source", C_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_csrc_builds_clean_with_strict_warnings(source):
    includes = [f"-I{d}" for d in sorted({str(p.parent) for p in (REPO / "csrc").rglob("*.h")})]
    proc = subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Wshadow", "-Wpedantic", "-Werror",
                           "-fsyntax-only", "-pthread", *includes, str(source)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

