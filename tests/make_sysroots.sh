#!/usr/bin/env bash
# Debian 12 sysroots for the foreign-loader tests (tests/test_elf_foreign.py):
#   .sysroots/arm64  libc6:arm64 and a few libraries, unpacked with dpkg -x, its ld.so.cache written by
#                    its own ldconfig under qemu-aarch64
#   .sysroots/i386   the multiarch i386 C library (libc6:i386), its cache written by its own ldconfig
# Needs root (dpkg --add-architecture, apt-get update; ldconfig -r chroots), apt, dpkg and qemu-user.
# Run once (.ci/run does); the tests skip without it. About 15 MB of downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.sysroots}
ARM64_PKGS="libc6 libc-bin libgcc-s1 libstdc++6 zlib1g libgomp1 libssl3 libexpat1 python3.11-minimal"
I386_PKGS="libc6 libc-bin libgcc-s1 libstdc++6 zlib1g"

added=0
for arch in arm64 i386; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        dpkg --add-architecture "$arch"
        added=1
    fi
done
if [ "$added" = 1 ] || ! apt-cache show libc6:arm64 >/dev/null 2>&1 || ! apt-cache show libc6:i386 >/dev/null 2>&1; then
    apt-get update -qq || true    # a foreign index that is briefly out of sync is not fatal
fi

build() {
    local arch=$1 pkgs=$2 root=$OUT/$1
    local debs
    debs=$(mktemp -d)
    chmod 0777 "$debs"     # apt-get download drops privileges to _apt
    (cd "$debs" && for p in $pkgs; do apt-get download -qq "$p:$arch"; done)
    rm -rf "$root"
    mkdir -p "$root"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$root"; done
    rm -rf "$debs"
}

build arm64 "$ARM64_PKGS"
build i386 "$I386_PKGS"
# Each root's cache is written by that root's own ldconfig: the host's x86 ldconfig skips aarch64
# objects ("unknown machine 183"). The i386 one is a static i386 program and runs natively.
qemu-aarch64 "$OUT/arm64/sbin/ldconfig" -r "$OUT/arm64"
"$OUT/i386/sbin/ldconfig" -r "$OUT/i386"
echo "sysroots ready in $OUT: $(ls "$OUT")"
