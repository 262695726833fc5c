#!/usr/bin/env bash
# Fetches the outside oracles of the UKI tests into a project-local cache, without
# touching the system's APT sources (a private APT_CONFIG per suite; .debs unpacked with
# dpkg-deb -x):
#   DEST/root, DEST/bin/systemd-measure   Debian trixie: ukify (systemd-ukify),
#       systemd-stub 257 (systemd-boot-efi) and systemd-measure 257 with the libraries it
#       needs beyond a bookworm host's; the wrapper runs it through trixie's own loader.
#   DEST/bpo/root, DEST/bpo/bin/systemd-measure   bookworm-backports: systemd-stub and
#       systemd-measure 254 (built for bookworm: the host's libc serves).
#   with --with-kernel, also DEST/kernel/vmlinuz: trixie's linux-image-amd64 kernel
#       (about 110 MB to download), which the UKI boot tests start in QEMU, and
#       DEST/kernel/michael_mic.ko.xz, one of its modules, signed by Debian.
#
# Usage: scripts/fetch-ukify.sh [--with-kernel] [DEST]   (default: .cache/uki-oracles)
# Prints DEST on success. Exit status 2 means a Debian mirror is unreachable.
set -euo pipefail

with_kernel=0
if [ "${1:-}" = "--with-kernel" ]; then
    with_kernel=1
    shift
fi
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/uki-oracles"}

. "$(dirname "$0")/private-apt.sh"

# apt_config SUITE DIR: a private APT configuration for SUITE under DIR/apt, updated.
apt_config() {
    private_apt "$2/apt" "$1" fetch-ukify
}

# fetch DIR PACKAGE...: download PACKAGEs with DIR's APT configuration, unpack into DIR/root.
fetch() {
    local dir=$1 apt_root="$1/apt"
    shift
    rm -f "$apt_root"/debs/*.deb
    (cd "$apt_root/debs" && APT_CONFIG="$apt_root/apt.conf" apt-get download -qq "$@")
    for deb in "$apt_root"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    for pkg in "$@"; do
        APT_CONFIG="$apt_root/apt.conf" apt-cache policy "$pkg" |
            awk -v p="$pkg" '/Candidate:/ {print p, $2}'
    done >>"$dest/versions.txt"
}

# wrapper PATH LINE...: an executable shell script made of the given lines.
wrapper() {
    local path=$1
    shift
    mkdir -p "$(dirname "$path")"
    printf '%s\n' '#!/bin/sh' "$@" >"$path"
    chmod +x "$path"
}

if [ ! -f "$dest/.complete" ]; then
    mkdir -p "$dest"
    : >"$dest/versions.txt"

    apt_config trixie "$dest"
    fetch "$dest" systemd-ukify systemd-boot-efi systemd libsystemd-shared libc6 libssl3t64
    root="$dest/root"
    wrapper "$dest/bin/systemd-measure" \
        "exec '$root/usr/lib64/ld-linux-x86-64.so.2' \\" \
        "    --library-path '$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/systemd' \\" \
        "    '$root/usr/lib/systemd/systemd-measure' \"\$@\""
    "$dest/bin/systemd-measure" --version >/dev/null

    apt_config bookworm-backports "$dest/bpo"
    fetch "$dest/bpo" systemd-boot-efi systemd libsystemd-shared
    root="$dest/bpo/root"
    wrapper "$dest/bpo/bin/systemd-measure" \
        "LD_LIBRARY_PATH='$root/usr/lib/x86_64-linux-gnu/systemd' \\" \
        "    exec '$root/lib/systemd/systemd-measure' \"\$@\""
    "$dest/bpo/bin/systemd-measure" --version >/dev/null
    touch "$dest/.complete"
fi

# The kernel, and one of its modules for the module-signature boot test (michael_mic:
# no dependencies, no hardware, 12 KB).
test_module=michael_mic.ko.xz
if [ "$with_kernel" = 1 ] && { [ ! -f "$dest/kernel/.complete" ] || [ ! -f "$dest/kernel/$test_module" ]; }; then
    apt_config trixie "$dest/kernel"
    # linux-image-amd64 only depends on the current versioned kernel package.
    kernel_pkg=$(APT_CONFIG="$dest/kernel/apt/apt.conf" apt-cache depends linux-image-amd64 |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fetch "$dest/kernel" "$kernel_pkg"
    cp "$dest/kernel/root/boot/vmlinuz-${kernel_pkg#linux-image-}" "$dest/kernel/vmlinuz"
    cp "$dest/kernel/root/usr/lib/modules/${kernel_pkg#linux-image-}/kernel/crypto/$test_module" \
        "$dest/kernel/$test_module"
    # Keep only these two: the other modules take 400 MB.
    rm -rf "$dest/kernel/root" "$dest/kernel/apt/debs"
    touch "$dest/kernel/.complete"
fi

# The package lists and caches are large and only needed for the downloads above.
for apt_root in "$dest/apt" "$dest/bpo/apt" "$dest/kernel/apt"; do
    rm -rf "$apt_root/lists" "$apt_root/debs" "$apt_root"/*.bin
done
echo "$dest"
