"""Text for people of a ``mltools doctor`` report (its JSON is the dataclass itself)."""
from __future__ import annotations

import os

from mltools._text import Table, key_values

__all__ = ["render_doctor"]


_SEVERITY_TITLES = (("error", "Errors"), ("warning", "Warnings"), ("info", "Notes"))


def _bases(base: str):
    """The site dir as given and as resolved: the loader names objects by their real paths, so a
    venv reached through a symlink (``/home`` -> ``/data``) has paths under either spelling."""
    if not base:
        return ()
    spelled = base.rstrip("/") + "/"
    real = os.path.realpath(base).rstrip("/") + "/"
    return (spelled,) if real == spelled else (spelled, real)


def _short(path: str, base: str) -> str:
    for prefix in _bases(base):
        if path and path.startswith(prefix):
            return path[len(prefix):]
    return path


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rel(text: str, base: str) -> str:
    """Paths under the first site dir, shown relative to it (JSON keeps them absolute)."""
    for prefix in _bases(base):
        text = text.replace(prefix, "")
    return text


def _needed_by_text(paths, base: str) -> str:
    if not paths:
        return "-"
    if len(paths) == 1:
        return _short(paths[0], base)
    def top(p):
        short = _short(p, base)
        return short.split("/", 1)[0] if short != p else os.path.dirname(p)
    tops = sorted({top(p) for p in paths})
    return f"{len(paths)} files under {', '.join(tops[:4])}" + (", ..." if len(tops) > 4 else "")


def _dlopens_table(dlopens, base: str) -> str:
    """One row per library name and copy: who opens it, and why that copy."""
    rows = {}
    for d in dlopens:
        key = (d.name, d.path)
        row = rows.setdefault(key, {"d": d, "holders": set()})
        row["holders"].add(d.holder)
    t = Table(["name", "package", "resolved", "path", "opened by"],
              title="\nNVIDIA libraries opened by name at run time (dlopen, resolved statically)")
    for (name, path), row in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        d = row["d"]
        t.add(name, d.package or "-", d.how, _short(path, base) if path else "not found",
              _needed_by_text(sorted(row["holders"]), base))
    return t.render()


def render_doctor(r) -> str:
    py = r.python
    base = py.site_dirs[0] if py.site_dirs else ""
    out = [key_values([
        ("python", f"{py.executable} ({py.implementation} {py.version}"
                   + (f", virtualenv {py.prefix}" if py.in_virtualenv else f", prefix {py.prefix}") + ")"),
        ("scanned", f"{_n(r.elf_files, 'ELF file')} ({_n(r.extension_modules, 'extension module')}) under "
                    f"{_n(len(r.scanned_dirs), 'dir')}, {_n(r.distributions, 'distribution')}"),
        ("site dir", base or "-"),
    ] + ([("what-if", "; ".join(f"{k}={v}" if v is not None else f"unset {k}" for k, v in r.environment.items()))]
         if r.environment else []) + [
        ("gpus", ", ".join(f"{g.name} ({g.capability[0]}.{g.capability[1]})" if g.source != "--gpu-arch"
                           else f"{g.name} (--gpu-arch)" for g in r.gpus) or "none found (nvidia-smi)"),
        ("took", f"{r.timings_s.get('total', 0):.2f} s"),
    ])]
    if r.runtimes:
        t = Table(["family", "impl", "soname", "package", "path", "needed by"], title="\nRuntime libraries")
        for c in r.runtimes:
            fam = c.family + (f" {c.major}" if c.major else "")
            t.add(fam, c.implementation, c.soname, c.package or "-", _short(c.path, base) or "not found",
                  _needed_by_text(c.needed_by, base))
        out.append(t.render())
    if r.gpu_code:
        t = Table(["package", "files", "GPU code (SASS + PTX)"], title="\nGPU code (from the fatbin headers)")
        for g in r.gpu_code:
            text = g.summary
            if g.partial_files:
                n = len(g.partial_files)
                text += f"; {n} file{'s keep' if n > 1 else ' keeps'} more in sections {'they load' if n > 1 else 'it loads'} itself"
                text = text.replace("they load itself", "they load themselves")
            t.add(g.package, g.files, text)
        out.append(t.render())
    if r.dlopens:
        out.append(_dlopens_table(r.dlopens, base))
    if getattr(r, "isa", None) is not None:
        out.append(render_isa(r.isa, base))
    if getattr(r, "targets", ()):
        out.append(render_targets(r.targets))
    if r.imported:
        libs = [lib for lib in r.loaded if not lib.extension_module]
        n_ext = len(r.loaded) - len(libs)
        t = Table(["#", "library", "package", "how", "path"],
                  title=f"\nShared libraries loaded by `import {', '.join(r.imported)}`, in load order "
                        f"(and {n_ext} extension modules)")
        for i, lib in enumerate(libs, 1):
            how = "dlopen" if lib.dlopened else "needed"
            if lib.dlopened and lib.loaded_by:
                how += f" by {os.path.basename(lib.loaded_by)}"
            if lib.runtime:
                how += f" [{lib.runtime}]"
            t.add(i, lib.soname, lib.package or "-", how, _short(lib.path, base))
        out.append(t.render())
    if r.scope:
        out.append("\nNot checked:\n" + "\n".join(f"  - {s}" for s in r.scope))
    if not r.findings:
        out.append("\nNo problems found.")
        return "\n".join(out)
    out.append(_counts_line(r.findings))
    out += _findings_block(r.findings, base, packages=True)
    if r.failed:
        out.append(f"\nexit status 1: findings at or above --fail-on {r.fail_on}")
    return "\n".join(out)


def _features_text(features, limit: int = 6) -> str:
    feats = sorted(features)
    return ", ".join(feats[:limit]) + (f" (+{len(feats) - limit})" if len(feats) > limit else "") if feats else "-"


def render_isa(isa, base: str = "") -> str:
    """The CPU-instruction pass: per package, what runs unguarded and what only behind CPU checks."""
    from collections import defaultdict

    level = "" if isa.cpu.startswith("x86-64") else f", x86-64-v{isa.cpu_level}"
    head = (f"\nCPU instructions, judged for {isa.cpu}{level}: {_n(isa.scanned, 'file')} "
            f"scanned, {isa.from_cache} from the cache, {isa.code_bytes / 1e6:.0f} MB of code decoded")
    if not isa.files:
        return head + "\nno file uses an instruction beyond x86-64's baseline"
    groups = defaultdict(list)
    for f in isa.files:
        groups[f.package or os.path.dirname(_short(f.path, base)) or "-"].append(f)
    t = Table(["package", "files", "runs unguarded (at load, or no CPU check)", "only behind CPU checks"])
    for pkg, files in sorted(groups.items(), key=lambda kv: (-max(f.needs_level for f in kv[1]), kv[0])):
        need = max(f.needs_level for f in files)
        ung = {x for f in files for x in f.unguarded}
        disp = {x for f in files for x in f.dispatched} - ung
        t.add(pkg, len(files), f"x86-64-v{need}" + (f": {_features_text(ung)}" if ung else ""),
              _features_text(disp))
    return head + "\n" + t.render()


def render_targets(checks) -> str:
    t = Table(["target", "glibc", "GLIBCXX", "CXXABI", "GCC", "files that fail", "data"],
              title="\nTarget machines (versioned needs judged against each)")
    for c in checks:
        m = c.maxima
        t.add(c.name, c.glibc, m.get("GLIBCXX", "-"), m.get("CXXABI", "-"), m.get("GCC", "-"),
              f"{c.files_failing} of {c.files_checked}",
              "auditwheel policy" if c.kind == "manylinux" else ("read from its packages" if c.verified
                                                                 else "published versions (not read from packages)"))
    return t.render()


def _counts_line(findings) -> str:
    """``\n2 errors, 1 warning, 3 notes``."""
    counts = {s: sum(1 for f in findings if f.severity.value == s) for s, _ in _SEVERITY_TITLES}
    nouns = {"error": "error", "warning": "warning", "info": "note"}
    return "\n" + ", ".join(f"{n} {nouns[s]}{'s' if n != 1 else ''}" for s, n in counts.items() if n)


def _findings_block(findings, base: str = "", packages: bool = False) -> list:
    """The findings by severity, each with its fix (``packages``: and the package its details name)."""
    out = []
    for sev, title in _SEVERITY_TITLES:
        group = [f for f in findings if f.severity.value == sev]
        if not group:
            continue
        out.append(f"\n{title}")
        for f in group:
            out.append(f"  {f.code}: {_rel(f.message, base)}")
            pkg = f.details.get("package") if packages and isinstance(f.details, dict) else None
            if pkg:
                out.append(f"      package: {pkg}")
            if f.fix:
                out.append(f"      fix: {_rel(f.fix, base)}")
    return out


def render_wheels(r) -> str:
    """``doctor --wheel``: per wheel, what it needs from the system and what the targets say."""
    out = []
    for w in r.wheels:
        need = ", ".join(v.replace("_", " ") for v in w.newest.values()) or "no versioned system symbols"
        out.append(key_values([
            ("wheel", os.path.basename(w.wheel) + (f" ({w.name} {w.version})" if w.name else "")),
            ("tags", ", ".join(w.tags) or "-"),
            ("ELF files", str(w.elf_files)),
            ("system libs", ", ".join(w.external) or "-"),
            ("needs", need),
            ("manylinux", f"{w.manylinux} (the most compatible policy its needs satisfy)" if w.manylinux
             else "none: it needs a system library or version no manylinux policy allows"),
        ]))
        if w.targets:
            out.append(render_targets(w.targets))
        if w.isa is not None:
            out.append(render_isa(w.isa))
        if w.findings:
            out.append(_counts_line(w.findings))
            out += _findings_block(w.findings)
        else:
            out.append("\nNo problems found.")
        out.append("")
    for e in r.errors:
        out.append(f"error: {e.message}")
    if r.failed:
        out.append(f"exit status 1: findings at or above --fail-on {r.fail_on}" + (" or unreadable wheels" if r.errors else ""))
    return "\n".join(out).rstrip("\n")


def _value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) or "-"
    return str(v)


def render_diff(d) -> str:
    out = [key_values([("A", d.a), ("B", d.b)])]
    if d.missing_sections:
        out.append("\nNot compared: " + "; ".join(d.missing_sections))
    if not d.items:
        out.append(f"\nNothing that matters differs ({_n(d.expected, 'expected difference')}: host, time, paths).")
        return "\n".join(out)
    t = Table(["what", "name", "A", "B", "why"])
    for i in d.items:
        t.add(i.category if i.matters else f"({i.category})", i.key, _value(i.a)[:70], _value(i.b)[:70], i.why or "")
    n = sum(1 for i in d.items if i.matters)
    out.append(f"\n{_n(n, 'difference')} that matter{'s' if n == 1 else ''}, most important first"
               + (f" ({d.expected} expected ones not shown: --all)" if d.expected and all(i.matters for i in d.items)
                  else ""))
    out.append(t.render())
    return "\n".join(out)
