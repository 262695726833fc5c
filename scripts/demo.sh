#!/usr/bin/env bash
# The main job end to end (what `make demo` runs): build the measured image and the
# training environment (numpy + scikit-learn), boot the image locally with a vTPM, train
# a small neural network in that environment, verify the certificate, then show that one
# changed byte in the weights makes verification fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
out=${1:-out}
# The job's freshness nonce; AICERT_DEMO_NONCE lets a caller (the system test) check it.
nonce=${AICERT_DEMO_NONCE:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "1/5  Build the measured OS image (mkosi; cached after the first build)"
"$bin/aicert-build" image --output "$out/image"

step "2/5  Build the training environment from pinned Debian packages (cached after the first build)"
# Rebuilt only when its definition, its lock or the code that writes it changes: two
# builds of the same inputs give the same manifest digest anyway.
env_dir=.cache/demo-environment
stamp=$(cat examples/demo/environment.toml examples/demo/environment.lock.json \
    builder/environment.py builder/oci_layout.py | sha256sum | cut -c1-64)
if [[ -f $env_dir/env.oci.tar && "$(cat "$env_dir/stamp" 2>/dev/null)" == "$stamp" ]]; then
    echo "demo: $env_dir/env.oci.tar is up to date"
else
    mkdir -p "$env_dir"
    "$bin/aicert-build" environment examples/demo/environment.toml --output "$env_dir/env.oci.tar"
    echo "$stamp" > "$env_dir/stamp"
fi

step "3/5  Boot the image in QEMU with a vTPM provisioned like Azure's; run the demo job in it"
rm -rf "$out/demo"
"$bin/aicert-build" run examples/demo/job.toml --image "$out/image" --output "$out/demo" \
    --ca "$out/local-ca" --nonce "$nonce"

verify=("$bin/aicert-verify" "$out/demo/certificate.aicert.json"
        --recipe "$out/image/recipe.json" --platform-profile qemu
        --trust-root "$out/demo/local-ca-root.pem" --nonce "$nonce")

step "4/5  Verify the certificate offline, as an auditor would"
"${verify[@]}" --weights "$out/demo/model" \
    --results "accuracy=$out/demo/evaluations/accuracy/results.json"

step "5/5  Change one byte of the weights: verification must fail"
rm -rf "$out/tampered" && cp -r "$out/demo/model" "$out/tampered"
python3 - "$out/tampered/mlp.npz" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
i = len(data) // 2  # inside a weight matrix
data[i] ^= 0x01
open(path, "wb").write(data)
print(f"changed byte {i} of {path}")
PY
if "${verify[@]}" --weights "$out/tampered"; then
    echo "demo: ERROR: the tampered weights verified" >&2
    exit 1
fi
printf '\ndemo: the tampered weights were refused, as they must be.\n'
