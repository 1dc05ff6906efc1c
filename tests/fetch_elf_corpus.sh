#!/usr/bin/env bash
# pyelftools' test corpus (odd and foreign ELF files: ARM, MIPS, PowerPC64, S/390, SPARC, RISC-V, LoongArch,
# TI DSPs, ...) for tests/test_elf_inspect_readelf.py, from the pyelftools sdist on PyPI, into .corpus/.
# The tests skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${PYELFTOOLS_CORPUS_VERSION:-0.33}
OUT=.corpus/pyelftools
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-binary :all: --no-deps -d "$tmp" "pyelftools==$VERSION"
tar -xzf "$tmp"/pyelftools-"$VERSION".tar.gz -C "$tmp"
rm -rf "$OUT"
mkdir -p "$OUT"
mv "$tmp/pyelftools-$VERSION/test" "$OUT/test"
echo "pyelftools $VERSION test corpus in $OUT: $(find "$OUT" -type f | wc -l) files"
