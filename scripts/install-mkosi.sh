#!/usr/bin/env bash
# Installs the pinned mkosi (Debian trixie's 25.3, pure Python, architecture all)
# into a project-local folder, identically on Debian 12 and 13 hosts, without
# touching the system's APT sources: a private APT_CONFIG lists only trixie,
# `apt-get download` fetches the .deb and `dpkg-deb -x` unpacks it. mkosi then
# runs as `python3 -m mkosi` with PYTHONPATH=DEST/usr/lib/python3/dist-packages.
# Everything else mkosi needs (systemd-repart, ukify, veritysetup, mkfs.erofs...)
# comes from its tools tree (ToolsTree=default), built from Debian packages.
#
# Usage: scripts/install-mkosi.sh [DEST]   (default: .tools/mkosi-25.3)
# Prints DEST on success. Exit status 2: the Debian mirror is unreachable;
# 3: the mirror no longer carries the pinned version.
set -euo pipefail

version=25.3
root="$(cd "$(dirname "$0")/.." && pwd)"
dest=${1:-"$root/.tools/mkosi-$version"}

if [ -f "$dest/.complete" ]; then
    echo "$dest"
    exit 0
fi

# The host needs only python3 (>= 3.9) and dpkg/apt, present on every Debian host.
for tool in python3 apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        echo "install-mkosi: '$tool' is missing; run scripts/install-host-deps.sh" >&2
        exit 1
    fi
done

apt_root="$dest.apt"
rm -rf "$dest" "$apt_root"
. "$(dirname "$0")/private-apt.sh"
private_apt "$apt_root" trixie install-mkosi
export APT_CONFIG="$apt_root/apt.conf"

candidate=$(apt-cache policy mkosi | awk '/Candidate:/ {print $2}')
case "$candidate" in
    "$version" | "$version"-*) ;;
    *)
        echo "install-mkosi: trixie offers mkosi '${candidate:-none}', not the pinned $version" >&2
        exit 3
        ;;
esac

(cd "$apt_root/debs" && apt-get download -qq "mkosi=$candidate")
mkdir -p "$dest"
dpkg-deb -x "$apt_root"/debs/mkosi_*.deb "$dest"
echo "mkosi $candidate" >"$dest/version.txt"
PYTHONPATH="$dest/usr/lib/python3/dist-packages" python3 -m mkosi --version >/dev/null
rm -rf "$apt_root"
touch "$dest/.complete"
echo "$dest"
