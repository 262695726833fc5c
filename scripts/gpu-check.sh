#!/usr/bin/env bash
# GPU device check: the agent's sandbox and measurement path, run directly on a host.
#
#   sudo scripts/gpu-check.sh            # on a GPU machine (CUDA PyTorch installed)
#   sudo scripts/gpu-check.sh --cpu      # anywhere: the CPU path, small sizes
#
# Prints (and writes as JSON to $OUT/gpu-check.json when OUT is set):
#   - training time under the agent's sandbox vs bare, and the ratio (goal <= 1.02);
#   - tree-digest throughput of a weights folder (>= 10 GiB on a GPU machine) on all
#     cores vs one core of `openssl sha256` over the same files;
#   - the GPUs as the statement would record them (and nvidia-smi's raw XML in $OUT).
# Needs root (the sandbox uses namespaces and drops to an unprivileged user), python3
# (/usr/bin/python3 or $PYTHON) with venv, util-linux unshare and openssl. Nothing is installed and nothing is fetched:
# a throw-away virtual environment sees the system's packages (PyTorch) and this tree.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/aicert-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# The sandbox starts its helper with `python -I` (no PYTHONPATH): make `aicert` importable
# through a .pth file of a venv instead, with the packages laid out as installed.
# The system interpreter: the sandbox user must be able to run it (not one under /root).
python=${PYTHON:-/usr/bin/python3}
"$python" -m venv --system-site-packages --without-pip "$work/venv"
mkdir -p "$work/src/aicert"
ln -s "$root"/aicert/*.py "$work/src/aicert/"
ln -s "$root/verifier" "$work/src/aicert/verifier"
ln -s "$root/agent" "$work/src/aicert/agent"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$work/src" > "$site/aicert-source.pth"

exec "$work/venv/bin/python" "$root/scripts/gpu_check.py" --workdir "$work" "$@"
