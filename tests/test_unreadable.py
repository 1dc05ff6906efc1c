"""Nothing is skipped in silence: paths mltools may not read are findings, as an unprivileged user.

root reads everything, so under root the commands run as ``nobody`` through
``setpriv``; as another user they run directly. The fixture has one good
library, a directory that cannot be listed and a library that cannot be read.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _as_unprivileged(argv):
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


@pytest.fixture
def tree():
    top = tempfile.mkdtemp(prefix="mltools-unreadable-")
    os.chmod(top, 0o755)
    src = os.path.join(top, "a.c")
    with open(src, "w") as fh:
        fh.write("int a(void){return 1;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(top, "libgood.so"), src], check=True)
    shutil.copy(os.path.join(top, "libgood.so"), os.path.join(top, "libsecret.so"))
    os.chmod(os.path.join(top, "libgood.so"), 0o755)
    os.chmod(os.path.join(top, "libsecret.so"), 0o000)
    os.mkdir(os.path.join(top, "locked"))
    shutil.copy(os.path.join(top, "libgood.so"), os.path.join(top, "locked", "libhidden.so"))
    os.chmod(os.path.join(top, "locked"), 0o000)
    yield top
    os.chmod(os.path.join(top, "locked"), 0o755)
    shutil.rmtree(top)


def _run(*args):
    proc = subprocess.run(_as_unprivileged([sys.executable, "-m", "mltools", *args]), capture_output=True,
                          text=True, timeout=300, cwd="/")
    return proc


def test_scan_reports_each_unreadable_path(tree):
    proc = _run("elf", "scan", "--json", tree)
    doc = json.loads(proc.stdout)
    unreadable = {f["details"]["path"]: f for f in doc["findings"] if f["code"] == "UNREADABLE"}
    assert set(unreadable) == {os.path.join(tree, "locked"), os.path.join(tree, "libsecret.so")}, doc["findings"]
    assert all(f["severity"] == "warning" and "Permission denied" in f["message"] for f in unreadable.values())
    assert [f["path"] for f in doc["files"]] == [os.path.join(tree, "libgood.so")]
    assert proc.returncode == 0          # warnings only, --fail-on error
    assert _run("elf", "scan", "--fail-on", "warning", tree).returncode == 1


def test_doctor_path_reports_each_unreadable_path(tree):
    proc = _run("doctor", "--json", "--path", tree)
    doc = json.loads(proc.stdout)
    paths = {f["details"]["path"] for f in doc["findings"] if f["code"] == "UNREADABLE"}
    assert {os.path.join(tree, "locked"), os.path.join(tree, "libsecret.so")} <= paths, doc["findings"]


def test_a_missing_scan_path_is_reported_and_the_others_go_on(tree):
    proc = _run("elf", "scan", "--json", tree, os.path.join(tree, "nope"))
    doc = json.loads(proc.stdout)
    assert [f["code"] for f in doc["findings"] if f["code"] == "NO_SUCH_PATH"] == ["NO_SUCH_PATH"]
    assert proc.returncode == 1
    proc = _run("elf", "scan", os.path.join(tree, "nope"))
    assert proc.returncode == 2 and proc.stderr.startswith("Error:") and proc.stderr.count("\n") == 1
