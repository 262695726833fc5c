"""How long does verifying a certificate take, in-process, without hashing weights?

Makes a real certificate on a swtpm (provisioned like Azure's vTPM, a real OVMF
log replayed into PCRs 0-7), then times ``verify_certificate`` from the parsed
certificate's bytes. Budget: 50 ms median.

    .venv/bin/python benchmarks/bench_verify.py [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.statement.certificate import parse_certificate
from aicert.verifier.verify import Policy, verify_certificate
from certgen import issue_certificate

BUDGET_MS = 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = LocalCa.load_or_create(work / "ca")
        with Swtpm.tcp(work / "tpm") as tpm:
            provision_like_azure(tpm.tcti, ca, "bench-vm")
            intermediate = ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
            (work / "job").mkdir()
            issued = issue_certificate(tpm.tcti, (intermediate,), work / "job")
        data = issued.path.read_bytes()
        policy = Policy(
            trust_roots=(ca.root_certificate,), expected_nonce=issued.nonce, accept_any_image=True
        )
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            report = verify_certificate(parse_certificate(data), policy)
            times.append((time.perf_counter() - start) * 1000)
            if not report.ok:
                raise SystemExit(f"verification failed: {report.error}")
    median = statistics.median(times)
    print(f"certificate: {len(data)} bytes, {len(issued.certificate.tpm.cel_log)} CEL records")
    print(
        f"verify (parse + all checks, no weights): median {median:.2f} ms, "
        f"p90 {statistics.quantiles(times, n=10)[-1]:.2f} ms over {args.runs} runs"
    )
    print(f"ratio to the {BUDGET_MS:.0f} ms budget: {median / BUDGET_MS:.3f}")


if __name__ == "__main__":
    main()
