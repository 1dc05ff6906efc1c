"""``elf inspect --json`` against GNU readelf, field by field, on files of many architectures.

The corpus: ELF files written here for many machines, both classes and byte
orders, with and without section headers (tests/elfgen.py); real files of this
machine (x86-64, i386 from gcc-12-multilib, aarch64 from the cross toolchain and
the test sysroot); and pyelftools' own test corpus of odd and foreign files
(ARM, MIPS, PowerPC64, S/390, SPARC, RISC-V, LoongArch, TI DSPs...), which
tests/fetch_elf_corpus.sh unpacks into .corpus/ from pyelftools' sdist.

Where readelf and the loader look at different headers, the test knows which
one inspect follows: readelf reads the section headers when a file has them,
inspect the program headers first and the sections only for what no program
header holds (``from_sections`` says so).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from elfgen import make_elf
from mltools.elf.inspect import inspect_file
from mltools.elf.machines import READELF_MACHINE_NAMES, machine_name
from mltools.errors import InputError

pytestmark = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / ".corpus" / "pyelftools" / "test"
OSABI = {0: "UNIX - System V", 3: "UNIX - GNU", 6: "UNIX - Solaris", 9: "UNIX - FreeBSD", 97: "ARM",
         255: "Standalone App"}
TYPES = {"NONE": "none", "REL": "relocatable", "EXEC": "executable", "DYN": "shared object", "CORE": "core"}


def readelf(path: str) -> str:
    return subprocess.run(["readelf", "-W", "-h", "-l", "-d", "-n", "-V", "--dyn-syms", path], capture_output=True,
                          text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, timeout=60,
                          errors="surrogateescape").stdout


def parse(out: str) -> dict:
    """The fields of readelf's output that inspect also reports."""
    r = {"needed": [], "soname": None, "rpath": None, "runpath": None, "flags": [], "flags_1": [],
         "interpreter": None, "gnu_stack": None, "relro": False, "tls": None, "build_id": None, "abi_tag": None,
         "isa": None, "features": [], "verneed": [], "verdef": [], "defined": 0, "undefined": 0, "header": {}}
    section = None
    need = None
    for line in out.splitlines():
        for start, name in (("ELF Header:", "h"), ("Program Headers:", "l"), ("Dynamic section at offset", "d"),
                            ("Displaying notes found", "n"), ("Version needs section", "vn"),
                            ("Version definition section", "vd"), ("Version symbols section", "vs"),
                            ("Symbol table '", "sym"), (" Section to Segment mapping", "map")):
            if line.startswith(start):
                section = name
                if name == "sym" and ".dynsym" not in line and "dynamic" not in line.lower():
                    section = "othersym"
                break
        else:
            if section == "h":
                m = re.match(r"\s+(Class|Data|OS/ABI|Type|Machine):\s+(.*)$", line)
                if m:
                    r["header"][m.group(1)] = m.group(2).strip()
            elif section == "l":
                m = re.match(r"\s+\[Requesting program interpreter: (.*)\]$", line)
                if m:
                    r["interpreter"] = m.group(1)
                    continue
                f = line.split()
                if len(f) >= 7 and f[1].startswith("0x"):
                    flg = "".join(f[6:-1])
                    if f[0] == "GNU_STACK":
                        r["gnu_stack"] = "RW" + ("X" if "E" in flg else "")
                    elif f[0] == "GNU_RELRO":
                        r["relro"] = True
                    elif f[0] == "TLS":
                        r["tls"] = int(f[5], 16)
            elif section == "d":
                m = re.match(r"\s*0x[0-9a-f]+ \((\w+)\)\s+(.*)$", line)
                if not m:
                    continue
                tag, val = m.group(1), m.group(2)
                b = re.search(r"\[(.*)\]$", val)
                text = b.group(1) if b else val
                if tag == "NEEDED":
                    r["needed"].append(text)
                elif tag in ("SONAME", "RPATH", "RUNPATH"):
                    r[tag.lower()] = text
                elif tag == "FLAGS":
                    r["flags"] = val.split()
                elif tag == "FLAGS_1":
                    r["flags_1"] = val.replace("Flags:", "").split()
            elif section == "n":
                m = re.search(r"Build ID: ([0-9a-f]+)", line)
                if m:
                    r["build_id"] = m.group(1)
                m = re.search(r"OS: (\w+), ABI: ([\d.]+)", line)
                if m:
                    r["abi_tag"] = f"{m.group(1)} {m.group(2)}"
                m = re.search(r"x86 ISA needed: (.*)$", line)
                if m:
                    levels = [2 if "v2" in x else 3 if "v3" in x else 4 if "v4" in x else 1
                              for x in m.group(1).split(",") if "x86-64" in x]
                    r["isa"] = max(levels) if levels else None
                m = re.search(r"x86 feature: (.*)$", line)
                if m:
                    r["features"] = [x.strip() for x in m.group(1).split(",") if x.strip() in ("IBT", "SHSTK")]
            elif section == "vn":
                m = re.match(r"\s+(?:0x)?[0-9a-f]+: Version: \d+\s+File: (.*?)\s+Cnt: \d+", line)
                if m:
                    need = {"file": m.group(1), "versions": []}
                    r["verneed"].append(need)
                    continue
                m = re.match(r"\s+0x[0-9a-f]+:\s+Name: (.*?)\s+Flags: .*Version: \d+", line)
                if m and need is not None:
                    need["versions"].append(m.group(1))
            elif section == "vd":
                m = re.match(r"\s+(?:0x)?[0-9a-f]+: Rev: \d+\s+Flags: (.*?)\s+Index: \d+\s+Cnt: \d+\s+Name: (.*)$",
                             line)
                if m and "BASE" not in m.group(1):
                    r["verdef"].append(m.group(2))
            elif section == "sym":
                line = re.sub(r"\s*\[[^\]]*\]", "", line)        # ppc64 "[<localentry>: 8]", MIPS others
                line = re.sub(r"<[^>]+>: \d+", "OTHER", line)      # GNU_UNIQUE: "<OS specific>: 10"
                m = re.match(r"\s+(\d+): [0-9a-f]+\s+\S+\s+(\w+)\s+(\w+)\s+\w+\s+(\S+)\s*(.*)$", line)
                if m and m.group(1) != "0":
                    name = re.sub(r"\s*\(\d+\)$", "", m.group(5).strip())
                    if not name or (m.group(2) == "SECTION" and m.group(3) == "LOCAL"):
                        continue          # readelf names STT_SECTION symbols after their section
                    r["undefined" if m.group(4) == "UND" else "defined"] += 1
    return r


def compare(path: str) -> list:
    """[(field, ours, readelf's)] for every field that differs."""
    try:
        ours = inspect_file(path)
    except InputError as exc:
        return [("refused", exc.message, "readelf read it")]
    theirs = parse(readelf(path))
    h = theirs["header"]
    diffs = []

    def check(field, a, b):
        if a != b:
            diffs.append((field, a, b))

    check("class", f"ELF{ours.elf_class}", h.get("Class"))
    check("byte_order", ours.byte_order, h.get("Data", "").rsplit(" ", 2)[-2] if h.get("Data") else None)
    if ours.osabi in OSABI:
        check("osabi", OSABI[ours.osabi], h.get("OS/ABI"))
    check("machine_name", ours.machine_name, h.get("Machine"))
    rtype = h.get("Type", "").split(" ", 1)
    expected_type = TYPES.get(rtype[0], ours.type.split(" (")[0])
    if rtype[0] == "DYN" and "Position-Independent" in h.get("Type", ""):
        expected_type += " (PIE)"
    check("type", ours.type, expected_type)
    check("interpreter", ours.interpreter, theirs["interpreter"])
    empty_names = "" in ours.needed or ours.soname == ""
    if empty_names:
        # readelf prints raw string offsets where the string table holds "": inspect says it in findings
        codes = {f.code for f in ours.findings}
        check("empty_name_findings", bool(codes & {"EMPTY_NEEDED", "EMPTY_SONAME"}), True)
    else:
        check("needed", list(ours.needed), theirs["needed"])
        check("soname", ours.soname, theirs["soname"])
        check("rpath", ours.rpath.raw if ours.rpath else None, theirs["rpath"])
        check("runpath", ours.runpath.raw if ours.runpath else None, theirs["runpath"])
    check("flags", list(ours.flags), theirs["flags"])
    check("flags_1", list(ours.flags_1), theirs["flags_1"])
    check("build_id", ours.build_id, theirs["build_id"])
    check("abi_tag", ours.abi_tag, theirs["abi_tag"])
    check("x86_isa_level", ours.x86_isa_level, theirs["isa"])
    check("x86_features", list(ours.x86_features), theirs["features"])
    check("gnu_stack", ours.gnu_stack, theirs["gnu_stack"])
    check("relro", ours.relro, theirs["relro"])
    check("tls_size_bytes", ours.tls_size_bytes, theirs["tls"])
    sections = set(re.findall(r"\]\s+(\.\S+)\s", subprocess.run(
        ["readelf", "-W", "-S", path], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout))
    # readelf 2.40 shows versions (and, with a section table, symbols) only through the sections;
    # inspect reads them through PT_DYNAMIC, as the loader does: without the sections readelf shows none
    readelf_blind = not ({".dynsym", ".gnu.version_r", ".gnu.version_d"} & sections)
    if not empty_names and not (readelf_blind and not theirs["verneed"] and not theirs["verdef"]):
        check("version_needs", [(v.file, list(v.versions)) for v in ours.version_needs],
              [(v["file"], v["versions"]) for v in theirs["verneed"]])
        check("version_defs", list(ours.version_defs), theirs["verdef"])
    if not empty_names and not (readelf_blind and theirs["defined"] + theirs["undefined"] == 0):
        check("symbols", (ours.defined_symbols, ours.undefined_symbols), (theirs["defined"], theirs["undefined"]))
    return diffs


def test_every_machine_name_is_readelfs(tmp_path):
    """The whole table, and values readelf does not know, one header each through one readelf run."""
    codes = sorted(READELF_MACHINE_NAMES) + [999, 0x1234, 0xFFFF]
    paths = []
    for code in codes:
        p = tmp_path / f"m{code}"
        p.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9
                      + struct.pack("<HHIQQQIHHHHHH", 3, code, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0))
        paths.append(str(p))
    out = subprocess.run(["readelf", "-h", *paths], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    names = re.findall(r"^\s+Machine:\s+(.*?)\s*$", out, re.M)
    assert len(names) == len(codes)
    assert [machine_name(c) for c in codes] == names


GENERATED = [
    # (machine, class, little-endian, with sections, extra)
    (62, 64, True, True, {"interp": "/lib64/ld-linux-x86-64.so.2", "flags_1": 0x08000000}), (3, 32, True, True, {}), (183, 64, True, False, {}), (40, 32, True, True,
                                                                                      {"e_flags": 0x5000400}),
    (8, 32, False, True, {}), (8, 64, True, False, {}), (21, 64, False, True, {}), (21, 64, True, True, {}),
    (20, 32, False, False, {}), (22, 64, False, True, {"osabi": 3}), (43, 64, False, True, {}), (18, 32, False, True, {}),
    (243, 64, True, True, {"interp": "/lib/ld-linux-riscv64-lp64d.so.1", "flags_1": 0x08000001}),
    (258, 64, True, False, {"flags": 0x8}), (0x9026, 64, True, True, {}), (50, 64, True, True, {}),
    (44, 32, True, True, {}), (118, 32, True, False, {}), (141, 32, True, True, {}), (190, 64, True, True, {}),
    (224, 64, True, False, {"stack_exec": True}), (247, 64, True, True, {}), (4, 32, False, True, {}),
    (15, 32, False, False, {}), (42, 32, True, True, {}), (252, 32, True, True, {}), (999, 64, True, True, {}),
]


@pytest.mark.parametrize("machine,elf_class,little,sections,extra", GENERATED,
                         ids=[f"{m}-{c}{'le' if le else 'be'}{'-sections' if s else ''}"
                              for m, c, le, s, _x in GENERATED])
def test_generated_files_of_many_machines(tmp_path, machine, elf_class, little, sections, extra):
    path = tmp_path / "libgen.so"
    path.write_bytes(make_elf(machine, elf_class=elf_class, little=little, sections=sections, **extra))
    assert compare(str(path)) == []


def _real_files():
    files = []
    for pattern in ("/usr/bin/ls", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                    "/usr/lib32/libc.so.6", "/usr/lib32/libstdc++.so.6", "/usr/lib32/ld-linux.so.2",
                    "/usr/aarch64-linux-gnu/lib/libc.so.6", "/usr/aarch64-linux-gnu/lib/libstdc++.so.6",
                    str(REPO / ".sysroots/arm64/usr/bin/python3.11"),
                    str(REPO / ".sysroots/arm64/usr/lib/aarch64-linux-gnu/libssl.so.3"),
                    str(REPO / ".sysroots/i386/usr/lib/i386-linux-gnu/libstdc++.so.6*")):
        files.extend(sorted(glob.glob(pattern))[:1])
    return [os.path.realpath(f) for f in files]


@pytest.mark.parametrize("path", _real_files())
def test_real_files_of_this_machine(path):
    assert compare(path) == []


def _corpus():
    if not CORPUS.is_dir():
        return []
    out = []
    for p in sorted(CORPUS.rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    out.append(p)
    return out


CORPUS_FILES = _corpus()


@pytest.mark.skipif(not CORPUS_FILES, reason="no pyelftools corpus: run tests/fetch_elf_corpus.sh")
def test_pyelftools_corpus_field_by_field():
    """Every ELF file of pyelftools' test corpus: no crash, and every field readelf shows agrees."""
    bad = {}
    for p in CORPUS_FILES:
        diffs = compare(str(p))
        if diffs:
            bad[str(p.relative_to(CORPUS))] = diffs
    machines = {inspect_file(str(p)).machine_code for p in CORPUS_FILES if _inspectable(p)}
    assert len(CORPUS_FILES) > 100 and len(machines) >= 10
    assert bad == {}


def _inspectable(p) -> bool:
    try:
        inspect_file(str(p))
        return True
    except InputError:
        return False
