#!/usr/bin/env bash
# Fetches the outside oracles of the UKI tests into a project-local cache, without
# touching the system's APT sources (a private APT_CONFIG per suite; .debs unpacked with
# dpkg-deb -x):
#   DEST/root, DEST/bin/systemd-measure   Debian trixie: ukify (systemd-ukify),
#       systemd-stub 257 (systemd-boot-efi) and systemd-measure 257 with the libraries it
#       needs beyond a bookworm host's; the wrapper runs it through trixie's own loader.
#   DEST/bpo/root, DEST/bpo/bin/systemd-measure   bookworm-backports: systemd-stub and
#       systemd-measure 254 (built for bookworm: the host's libc serves).
#
# Usage: scripts/fetch-ukify.sh [DEST]   (default: .cache/uki-oracles)
# Prints DEST on success. Exit status 2 means a Debian mirror is unreachable.
set -euo pipefail

dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/uki-oracles"}

if [ -f "$dest/.complete" ]; then
    echo "$dest"
    exit 0
fi

# fetch SUITE DIR PACKAGE...: download PACKAGEs of SUITE and unpack them into DIR/root.
fetch() {
    local suite=$1 dir=$2
    shift 2
    local apt_root="$dir/apt"
    mkdir -p "$apt_root"/{lists/partial,archives/partial,etc/preferences.d,etc/apt.conf.d,debs}
    echo "deb http://deb.debian.org/debian $suite main" >"$apt_root/etc/sources.list"
    : >"$apt_root/status"
    cat >"$apt_root/apt.conf" <<EOF
Dir::State "$apt_root";
Dir::State::Lists "$apt_root/lists";
Dir::State::status "$apt_root/status";
Dir::Cache "$apt_root";
Dir::Cache::archives "$apt_root/archives";
Dir::Etc::SourceList "$apt_root/etc/sources.list";
Dir::Etc::SourceParts "$apt_root/etc/sources.list.d";
Dir::Etc::Preferences "$apt_root/etc/preferences";
Dir::Etc::PreferencesParts "$apt_root/etc/preferences.d";
Dir::Etc::Parts "$apt_root/etc/apt.conf.d";
APT::Architecture "amd64";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
    if ! APT_CONFIG="$apt_root/apt.conf" apt-get update -qq 2>"$apt_root/update.log" ||
        grep -q '^[EW]:' "$apt_root/update.log"; then
        echo "fetch-ukify: the Debian $suite mirror is unreachable (see $apt_root/update.log)" >&2
        exit 2
    fi
    rm -f "$apt_root"/debs/*.deb
    (cd "$apt_root/debs" && APT_CONFIG="$apt_root/apt.conf" apt-get download -qq "$@")
    for deb in "$apt_root"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    for pkg in "$@"; do
        APT_CONFIG="$apt_root/apt.conf" apt-cache policy "$pkg" |
            awk -v p="$pkg" -v s="$suite" '/Candidate:/ {print s, p, $2}'
    done >>"$dest/versions.txt"
    # The package lists are large and only needed for the download above.
    rm -rf "$apt_root/lists"
}

# wrapper PATH LINE...: an executable shell script made of the given lines.
wrapper() {
    local path=$1
    shift
    mkdir -p "$(dirname "$path")"
    printf '%s\n' '#!/bin/sh' "$@" >"$path"
    chmod +x "$path"
}

mkdir -p "$dest"
: >"$dest/versions.txt"

fetch trixie "$dest" systemd-ukify systemd-boot-efi systemd libsystemd-shared libc6 libssl3t64
root="$dest/root"
wrapper "$dest/bin/systemd-measure" \
    "exec '$root/usr/lib64/ld-linux-x86-64.so.2' \\" \
    "    --library-path '$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/systemd' \\" \
    "    '$root/usr/lib/systemd/systemd-measure' \"\$@\""
"$dest/bin/systemd-measure" --version >/dev/null

fetch bookworm-backports "$dest/bpo" systemd-boot-efi systemd libsystemd-shared
root="$dest/bpo/root"
wrapper "$dest/bpo/bin/systemd-measure" \
    "LD_LIBRARY_PATH='$root/usr/lib/x86_64-linux-gnu/systemd' \\" \
    "    exec '$root/lib/systemd/systemd-measure' \"\$@\""
"$dest/bpo/bin/systemd-measure" --version >/dev/null

touch "$dest/.complete"
echo "$dest"
