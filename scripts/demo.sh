#!/usr/bin/env bash
# The main job end to end (what `make demo` runs): build the measured image, boot it
# locally with a vTPM, train a small model in it, verify the certificate, then show
# that one changed byte in the weights makes verification fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
out=${1:-out}
# The job's freshness nonce; AICERT_DEMO_NONCE lets a caller (the system test) check it.
nonce=${AICERT_DEMO_NONCE:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "1/4  Build the measured OS image (mkosi; cached after the first build)"
"$bin/aicert-build" image --output "$out/image"

step "2/4  Boot it in QEMU with a vTPM provisioned like Azure's; run the demo job in it"
rm -rf "$out/demo"
"$bin/aicert-build" run examples/demo/job.toml --image "$out/image" --output "$out/demo" \
    --ca "$out/local-ca" --nonce "$nonce"

verify=("$bin/aicert-verify" "$out/demo/certificate.aicert.json"
        --recipe "$out/image/recipe.json" --platform-profile qemu
        --trust-root "$out/demo/local-ca-root.pem" --nonce "$nonce")

step "3/4  Verify the certificate offline, as an auditor would"
"${verify[@]}" --weights "$out/demo/model" \
    --results "accuracy=$out/demo/evaluations/accuracy/results.json"

step "4/4  Change one byte of the weights: verification must fail"
rm -rf "$out/tampered" && cp -r "$out/demo/model" "$out/tampered"
python3 - "$out/tampered/weights.json" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
i = next(i for i, b in enumerate(data) if chr(b) in "12345678")
data[i] += 1
open(path, "wb").write(data)
print(f"changed byte {i} of {path}")
PY
if "${verify[@]}" --weights "$out/tampered"; then
    echo "demo: ERROR: the tampered weights verified" >&2
    exit 1
fi
printf '\ndemo: the tampered weights were refused, as they must be.\n'
