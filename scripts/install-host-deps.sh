#!/usr/bin/env bash
# Installs the host packages aicert needs on Debian 12 (bookworm) or 13 (trixie).
# Idempotent; run as root (or through sudo). Only Debian's own archives are used.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=DEBIAN_FRONTEND "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
case "${VERSION_CODENAME:-}" in
    bookworm)
        # QEMU 10 comes from bookworm-backports; backports stay at
        # apt's default low priority, so nothing else is upgraded by accident.
        echo "deb http://deb.debian.org/debian bookworm-backports main" \
            > /etc/apt/sources.list.d/aicert-bookworm-backports.list
        backports=(-t bookworm-backports)
        ;;
    trixie)
        backports=()
        ;;
    *)
        echo "install-host-deps: unsupported distribution '${PRETTY_NAME:-unknown}'; aicert supports Debian 12 and 13" >&2
        exit 1
        ;;
esac

# Unrelated third-party sources on the machine may be unreachable; that must not stop us,
# and a missing Debian package is reported by apt-get install below.
apt-get update -qq || echo "install-host-deps: apt-get update reported errors (continuing)" >&2

apt-get install -y -qq --no-install-recommends \
    ca-certificates gcc git make pkg-config python3 python3-dev python3-venv \
    libtss2-dev tpm2-tools swtpm swtpm-tools \
    ovmf systemd-boot-efi zstd e2fsprogs cpio libc6-dev sbsigntool >/dev/null
# The gpu image test reads the signed modules back out of the erofs root.
apt-get install -y -qq --no-install-recommends erofs-utils >/dev/null

# OCI environments: the tests' local registry, and the benchmark's reference tools.
apt-get install -y -qq --no-install-recommends docker-registry skopeo umoci >/dev/null
# The package's own service would serve every interface on :5000; the tests start their
# own registry on 127.0.0.1.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi

# Training environments: crun and tini run them (as in the image), mmdebstrap builds
# them (aicert-build environment), busybox-static is the tests' small root file system.
apt-get install -y -qq --no-install-recommends \
    crun tini mmdebstrap busybox-static >/dev/null

apt-get install -y -qq --no-install-recommends "${backports[@]}" \
    qemu-system-x86 qemu-utils >/dev/null

echo "install-host-deps: host packages ready"
