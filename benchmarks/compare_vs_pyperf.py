#!/usr/bin/env python3
"""`mltools bench compare` against `pyperf compare_to` on pyperf result files, in one run.

For every ordered pair of the files given that share benchmark names (default:
the result files pyperf's wheel ships), both tools judge each benchmark:
pyperf with its t-test on the means (`compare_to -v`), mltools with the
bootstrap interval of the ratio of the medians. Prints the agreement on
"significant or not" and on the direction, and every disagreement with both
tools' figures, so a reader can see where the two methods part.

Usage: python benchmarks/compare_vs_pyperf.py [FILE.json[.gz] ...]
"""
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mltools.env import describe_machine  # noqa: E402
from mltools.results.compare import compare_results, load_results  # noqa: E402


def pyperf_verdicts(a, b):
    out = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", "-v", a, b], capture_output=True,
                         text=True, check=True).stdout
    verdicts, name, direction, lines = {}, None, None, out.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"=+", lines[i + 1]) and line.strip():
            name = line.strip()
        m = re.search(r": ([\d.]+)x (faster|slower)$|: (no change)$", line)
        if m and name:
            direction = (m.group(2) or "same", m.group(1))
        if line.startswith("Significant") and name:
            verdicts[name] = (direction, True)
        elif line.startswith("Not significant") and name:
            verdicts[name] = (direction, False)
    if not verdicts and name is None:       # one benchmark per file: no section titles
        m = re.search(r": ([\d.]+)x (faster|slower)\n(Significant|Not significant)", out)
        if m:
            verdicts["(single)"] = ((m.group(2), m.group(1)), m.group(3) == "Significant")
    return verdicts


def main():
    files = sys.argv[1:]
    if not files:
        import pyperf
        d = Path(pyperf.__file__).parent / "tests"
        files = sorted(str(p) for p in d.glob("*.json"))
    usable = []
    for f in files:
        try:
            load_results(f)
            usable.append(f)
        except Exception as exc:   # noqa: BLE001 - reported and skipped
            print(f"skipped {f}: {exc}")
    print(f"machine: {describe_machine()}")
    agree = total = direction_agree = both = 0
    for a, b in itertools.permutations(usable, 2):
        names_a = {c.name for c in load_results(a).cases}
        names_b = {c.name for c in load_results(b).cases}
        if not names_a & names_b:
            continue
        theirs = pyperf_verdicts(a, b)
        ours = {c.name: c for c in compare_results(a, [b]).comparisons[0].cases}
        if "(single)" in theirs and len(ours) == 1:
            theirs = {next(iter(ours)): theirs["(single)"]}
        for name, ((direction, factor), significant) in theirs.items():
            c = ours.get(name)
            if c is None:
                continue
            total += 1
            same = c.significant == significant
            agree += same
            if significant and c.significant:
                both += 1
                direction_agree += c.verdict == direction
            if not same:
                print(f"differ: {os.path.basename(a)} -> {os.path.basename(b)} {name}: pyperf {factor}x "
                      f"{direction}, {'significant' if significant else 'not significant'}; mltools "
                      f"{c.verdict_text} (interval {c.speedup_low:.3f}-{c.speedup_high:.3f}, n {c.baseline_n}/{c.n})")
    print(f"significance agrees on {agree} of {total} benchmark comparisons; "
          f"direction agrees on {direction_agree} of the {both} both call significant")


if __name__ == "__main__":
    main()
