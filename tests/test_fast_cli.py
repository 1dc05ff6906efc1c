"""The short path of ``elf tree`` / ``elf inspect`` (mltools/__main__.py) against the click commands.

Every case runs both ways in a fresh interpreter: ``python -m mltools ARGS``
(the short path where it applies) and ``mltools.cli.main(ARGS)`` (click
always). Standard output, standard error and the exit status must be equal,
byte for byte; and where the short path applies, it must not import click.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MLTOOLS_"))}, "LC_ALL": "C"}
CLICK = "import sys\nfrom mltools.cli import main\nmain(sys.argv[1:])"


def both(args, env=None):
    e = {**ENV, **(env or {})}
    fast = subprocess.run([sys.executable, "-m", "mltools", *args], capture_output=True, text=True, env=e,
                          timeout=300, cwd=str(REPO))
    slow = subprocess.run([sys.executable, "-c", CLICK, *args], capture_output=True, text=True, env=e,
                          timeout=300, cwd=str(REPO))
    return fast, slow


def _dynamic_bin(n):
    out = []
    for name in sorted(os.listdir("/usr/bin")):
        p = os.path.join("/usr/bin", name)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fh:
                head = fh.read(20)
            if head[:4] == b"\x7fELF" and head[16] == 3:           # ET_DYN: PIE programs
                out.append(p)
        if len(out) >= n:
            break
    return out


ARM64 = REPO / ".sysroots" / "arm64"
CASES = [
    ["elf", "tree", "/bin/ls"],
    ["elf", "tree", "--json", "/bin/ls"],
    ["elf", "tree", "--flat", "-q", "/bin/ls"],
    ["elf", "tree", "/bin/ls", "--json", "--clean-env"],
    ["elf", "tree", "--json", "/bin/ls", "/bin/true", "/no/such/file"],
    ["elf", "tree", "--hwcaps-mask", "x86-64-v2", "--ld-library-path=/tmp", "/bin/ls"],
    ["elf", "tree", "--env", "LD_LIBRARY_PATH=/tmp:", "--env=LD_PRELOAD=libz.so.1", "/bin/ls"],
    ["elf", "tree", "--preload", "libz.so.1", "--jobs=0", "/bin/ls"],
    ["elf", "tree", "--json", *_dynamic_bin(70)],
    ["elf", "tree", "--json", "-j", "2", *_dynamic_bin(70)],
    ["elf", "tree", "--flat", *_dynamic_bin(70)],
    ["elf", "tree", "/no/such/file"],
    ["elf", "tree", "--env", "NOEQUALS", "/bin/ls"],
    ["elf", "tree", "-j", "x", "/bin/ls"],
    ["elf", "tree", "--root", "/bin/ls", "/bin/ls"],
    ["elf", "tree", "--bogus", "/bin/ls"],
    ["elf", "tree", "--help"],
    ["elf", "tree", "--", "/bin/ls"],
    ["elf", "inspect", "/bin/ls"],
    ["elf", "inspect", "--json", "/bin/ls", "/usr/lib/x86_64-linux-gnu/libc.so.6"],
    ["elf", "inspect", "--symbols", "--json", "/bin/true"],
    ["elf", "inspect", "/bin/ls", "/no/such/file"],
    ["elf", "inspect", "/etc/hostname"],
]
if (ARM64 / "usr/bin/python3.11").exists():
    CASES.append(["elf", "tree", "--root", str(ARM64), "/usr/bin/python3.11"])


@pytest.mark.parametrize("args", CASES, ids=[" ".join(a[:4]) + (" ..." if len(a) > 4 else "") for a in CASES])
def test_short_path_writes_what_click_writes(args):
    fast, slow = both(args)
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert "Traceback" not in fast.stderr + slow.stderr


def test_the_environment_is_read_the_same_way(tmp_path):
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libselinux.so.1"), tmp_path / "libselinux.so.1")
    fast, slow = both(["elf", "tree", "--json", "/bin/ls"], env={"LD_LIBRARY_PATH": str(tmp_path)})
    assert fast.stdout == slow.stdout and str(tmp_path / "libselinux.so.1") in fast.stdout
    assert fast.stderr == slow.stderr == ""


@pytest.mark.parametrize("args", [["elf", "tree", "/bin/ls"], ["elf", "inspect", "--json", "/bin/ls"]])
def test_short_path_does_not_import_click(args):
    code = ("import sys\nimport mltools.__main__ as m\ntry:\n    m.main(%r)\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(' '.join(x for x in ('click', 'typing', 'dataclasses', 'hashlib', 're')"
            " if x in sys.modules and x not in START))" % (args,))
    start = "import sys; START = set(sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", start + code], capture_output=True, text=True, env=ENV, cwd="/")
    assert proc.stderr == "", proc.stderr


def test_interrupt_in_the_short_path_exits_130():
    """SIGINT while resolving: the short path ends as the click path does (130, one line)."""
    if shutil.which("python3") is None:
        pytest.skip("needs python3")
    code = ("import os, signal, sys\nimport mltools.elf.batch as b\norig = b.resolve_batch\n"
            "def slow(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return orig(*a, **k)\n"
            "b.resolve_batch = slow\nimport mltools.__main__ as m\nm.main(['elf', 'tree', '/bin/ls'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 130 and proc.stdout == "" and proc.stderr.strip() == "Interrupted (SIGINT)."


@pytest.mark.parametrize("command", ["tree", "inspect"])
def test_short_path_knows_only_options_the_click_command_has(command):
    """Every option the short path parses exists on the click command with the same kind
    (flag, value, repeatable); an option it does not know goes to click."""
    import mltools.__main__ as entry
    from mltools.cli.elf import elf

    cmd = elf.commands[command]
    kinds = {}
    for param in cmd.params:
        if param.param_type_name != "option":
            continue
        kind = "flag" if param.is_flag else "multi" if param.multiple else "value"
        for opt in param.opts + param.secondary_opts:
            kinds[opt] = kind
    assert {o: kinds.get(o) for o in entry._OPTIONS[command]} == entry._OPTIONS[command]
