#!/usr/bin/env bash
# Fetches Debian trixie's ukify (systemd-ukify), systemd-stub 257 (systemd-boot-efi) and
# systemd-measure 257 (with the libraries it needs beyond a bookworm host's) into a
# project-local cache, without touching the system's APT sources: a private APT_CONFIG
# lists only trixie, and the .debs are unpacked with dpkg-deb -x. The tests use them as
# outside oracles for UKI layout and PCR 11. bin/systemd-measure runs the unpacked binary
# through trixie's own dynamic loader, so it works on bookworm and trixie hosts alike.
#
# Usage: scripts/fetch-ukify.sh [DEST]   (default: .cache/trixie-ukify)
# Prints DEST on success. Exit status 2 means the Debian mirror is unreachable.
set -euo pipefail

dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/trixie-ukify"}
packages=(systemd-ukify systemd-boot-efi systemd libsystemd-shared libc6 libssl3t64)

if [ -f "$dest/.complete" ]; then
    echo "$dest"
    exit 0
fi

apt_root="$dest/apt"
root="$dest/root"
mkdir -p "$apt_root"/{lists/partial,archives/partial,etc/preferences.d,etc/apt.conf.d,debs}
echo "deb http://deb.debian.org/debian trixie main" >"$apt_root/etc/sources.list"
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
export APT_CONFIG="$apt_root/apt.conf"

if ! apt-get update -qq 2>"$apt_root/update.log" || grep -q '^[EW]:' "$apt_root/update.log"; then
    echo "fetch-ukify: the Debian trixie mirror is unreachable (see $apt_root/update.log)" >&2
    exit 2
fi

rm -f "$apt_root"/debs/*.deb
(cd "$apt_root/debs" && apt-get download -qq "${packages[@]}")
for deb in "$apt_root"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root"
done

mkdir -p "$dest/bin"
{
    echo '#!/bin/sh'
    echo "exec '$root/usr/lib64/ld-linux-x86-64.so.2' \\"
    echo "    --library-path '$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/systemd' \\"
    echo "    '$root/usr/lib/systemd/systemd-measure' \"\$@\""
} >"$dest/bin/systemd-measure"
chmod +x "$dest/bin/systemd-measure"
"$dest/bin/systemd-measure" --version >/dev/null

for pkg in "${packages[@]}"; do
    apt-cache policy "$pkg" | awk -v p="$pkg" '/Candidate:/ {print p, $2}'
done >"$dest/versions.txt"
touch "$dest/.complete"
echo "$dest"
