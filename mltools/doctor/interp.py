"""The Python interpreter whose environment is diagnosed.

The running interpreter answers from ``sys`` and ``sysconfig``; another one
(``--python EXE``) is asked with one subprocess that prints the same facts as
JSON. Everything else doctor needs about that environment (the files, the
package metadata) is read from disk by this process.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

from mltools.errors import InputError, SubprocessError

# Runs under the target interpreter: plain Python 3 (3.6+ syntax), stdlib only,
# no site customisation skipped, so sys.path is what that interpreter really uses.
_PROBE = r"""
import json, os, site, sys, sysconfig, platform
cv = sysconfig.get_config_var
libdir, ldlib = cv("LIBDIR") or "", cv("LDLIBRARY") or ""
user_site = None
try:
    if site.ENABLE_USER_SITE:
        user_site = site.getusersitepackages()
except Exception:
    pass
json.dump({
    "executable": sys.executable,
    "version": platform.python_version(),
    "implementation": platform.python_implementation(),
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "sys_path": [p for p in sys.path],
    "purelib": sysconfig.get_paths().get("purelib"),
    "platlib": sysconfig.get_paths().get("platlib"),
    "user_site": user_site,
    "soabi": cv("SOABI"),
    "ext_suffix": cv("EXT_SUFFIX"),
    "shared_libpython": os.path.join(libdir, ldlib) if cv("Py_ENABLE_SHARED") and ldlib else None,
    "machine": platform.machine(),
}, sys.stdout)
"""


@dataclass(frozen=True)
class InterpreterInfo:
    executable: str
    version: str
    implementation: str
    prefix: str
    base_prefix: str
    in_virtualenv: bool
    sys_path: Tuple[str, ...]
    site_dirs: Tuple[str, ...]        # site-packages style dirs (purelib, platlib, user site) that exist
    soabi: Optional[str]
    ext_suffix: Optional[str]
    shared_libpython: Optional[str]   # libpythonX.Y.so when the interpreter links it, else None
    machine: str
    is_running: bool                  # the interpreter running mltools itself


def _from_probe(data: dict, is_running: bool) -> InterpreterInfo:
    site_dirs = []
    for key in ("purelib", "platlib", "user_site"):
        d = data.get(key)
        if d and os.path.isdir(d) and os.path.realpath(d) not in {os.path.realpath(x) for x in site_dirs}:
            site_dirs.append(d)
    # Other site dirs on sys.path (--system-site-packages, .pth-added dirs).
    for p in data.get("sys_path") or ():
        if p and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages") and os.path.isdir(p) \
                and os.path.realpath(p) not in {os.path.realpath(x) for x in site_dirs}:
            site_dirs.append(p)
    return InterpreterInfo(
        executable=data["executable"],
        version=data["version"],
        implementation=data["implementation"],
        prefix=data["prefix"],
        base_prefix=data["base_prefix"],
        in_virtualenv=data["prefix"] != data["base_prefix"],
        sys_path=tuple(p for p in data.get("sys_path") or () if p),   # '' is the cwd under -c
        site_dirs=tuple(site_dirs),
        soabi=data.get("soabi"),
        ext_suffix=data.get("ext_suffix"),
        shared_libpython=data.get("shared_libpython"),
        machine=data.get("machine") or "",
        is_running=is_running,
    )


def running_interpreter() -> InterpreterInfo:
    """The interpreter running mltools, from ``sys``/``sysconfig`` (no subprocess)."""
    scope: dict = {}
    import io
    buf = io.StringIO()
    saved = sys.stdout
    try:
        sys.stdout = buf
        exec(compile(_PROBE, "<mltools.doctor probe>", "exec"), scope)
    finally:
        sys.stdout = saved
    data = json.loads(buf.getvalue())
    # sys.path[0] is this program's own directory (or the cwd under -m), not the environment.
    if data["sys_path"] and not getattr(sys.flags, "safe_path", False):
        data["sys_path"] = data["sys_path"][1:]
    return _from_probe(data, is_running=True)


def probe_interpreter(executable: str, *, timeout: float = 60.0) -> InterpreterInfo:
    """Ask another interpreter for its ``sys.path``, prefix and version (one subprocess)."""
    from mltools import _proc

    exe = executable
    if os.sep not in exe:
        found = _proc.which(exe)
        if found is None:
            raise InputError(f"--python {executable}: no such program on PATH")
        exe = found
    if not os.path.exists(exe):
        raise InputError(f"--python {executable}: no such file")
    if os.path.isdir(exe):
        raise InputError(f"--python {executable}: is a directory, not an interpreter")
    if not os.access(exe, os.X_OK):
        raise InputError(f"--python {executable}: not executable")
    res = _proc.run([exe, "-c", _PROBE], timeout=timeout, lc_all_c=True)
    if res.timed_out:
        raise SubprocessError(f"--python {executable}: no answer within {timeout:g} s")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit status {res.exit_status}"])[-1]
        raise SubprocessError(f"--python {executable} is not a working Python 3 interpreter: {last}")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise SubprocessError(f"--python {executable}: unexpected output from the interpreter") from None
    same = os.path.realpath(data.get("executable") or "") == os.path.realpath(sys.executable) \
        and data.get("prefix") == sys.prefix
    return _from_probe(data, is_running=same)
