"""Which Python interpreter: one answer for ``doctor --python``, ``elf check --as-python``
and everything else that runs or models an interpreter.

- :func:`resolve_interpreter` turns what the user wrote (a path, a name on
  ``PATH``, nothing for the running one) into a path, with one set of checks
  and messages;
- :func:`running_interpreter` / :func:`probe_interpreter` describe it
  (``sys.path``, prefix, version, ...): the running one from ``sys`` and
  ``sysconfig``, another with one subprocess that prints the same facts as JSON;
- :func:`interpreter_binary` is the ELF program behind a wrapper (a pyenv shim);
- :func:`loaded_by_imports` is what it has mapped after importing some modules.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from mltools.errors import InputError, SubprocessError

__all__ = ["InterpreterInfo", "resolve_interpreter", "running_interpreter", "probe_interpreter",
           "interpreter_binary", "loaded_by_imports"]


def resolve_interpreter(spec: Optional[str], *, label: str = "--python") -> str:
    """The interpreter ``spec`` names: a path, a program on ``PATH``, or (None or "") the one
    running mltools. ``label`` names the option in messages. Raises InputError."""
    from mltools import _proc

    if not spec:
        return sys.executable
    exe = spec
    if os.sep not in exe:
        found = _proc.which(exe)
        if found is None:
            raise InputError(f"{label} {spec}: no such program on PATH")
        exe = found
    if not os.path.exists(exe):
        raise InputError(f"{label} {spec}: no such file")
    if os.path.isdir(exe):
        raise InputError(f"{label} {spec}: is a directory, not an interpreter")
    if not os.access(exe, os.X_OK):
        raise InputError(f"{label} {spec}: not executable")
    return exe


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

    exe = resolve_interpreter(executable)
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


_MAPS_PROBE = ("import sys\n"
          "for _m in sys.argv[1:]:\n"
          "    __import__(_m)\n"
          "sys.stdout.write(open('/proc/self/maps').read())\n")


def loaded_by_imports(python: str, modules: Sequence[str], *, timeout: float = 300.0) -> Tuple[str, ...]:
    """The shared objects a fresh ``python`` has mapped after importing ``modules``.

    Read from the child's /proc/self/maps (address order, first mapping of
    each file); the interpreter itself and ld.so are left out.
    """
    from mltools import _proc
    from mltools.elf.files import looks_like_elf

    res = _proc.run([python, "-c", _MAPS_PROBE, *modules], timeout=timeout)
    if res.timed_out:
        raise InputError(f"importing {', '.join(modules)} in {python} took more than {timeout:g} s")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise InputError(f"{python} could not import {', '.join(modules)}: {last}")
    exe = os.path.realpath(python)
    seen: List[str] = []
    for line in res.stdout.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        p = parts[5]
        if p.endswith(" (deleted)") or p in seen:
            continue
        seen.append(p)
    out = []
    for p in seen:
        real = os.path.realpath(p)
        if real == exe or os.path.basename(p).startswith("ld-linux") or not looks_like_elf(p):
            continue
        if ".so" not in os.path.basename(p):
            continue
        out.append(p)
    return tuple(out)


def interpreter_binary(python: str, *, label: str = "--python", timeout: float = 60.0) -> str:
    """The ELF executable behind ``python`` (a wrapper script such as a pyenv
    shim is asked for its ``sys.executable``)."""
    from mltools import _proc
    from mltools.elf.files import looks_like_elf

    if looks_like_elf(python):
        return python
    res = _proc.run([python, "-c", "import sys; print(sys.executable)"], timeout=timeout)
    exe = res.stdout.strip().splitlines()[-1:] if res.returncode == 0 else []
    if not exe or not looks_like_elf(exe[0]):
        raise InputError(f"{label} {python}: not a Python interpreter (no ELF executable behind it)")
    return exe[0]
