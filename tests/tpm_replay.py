"""Replay a real firmware event log into a swtpm, so its PCRs and the log agree.

A swtpm started by a test has no firmware: its PCRs 0-7 are zero. Extending the
digests of a real OVMF boot log (shared testdata) into them gives certificates
whose firmware-log check is meaningful: the verifier replays the same log.
"""

from __future__ import annotations

from pathlib import Path

from aicert.verifier.pcr import ALGORITHMS_BY_ID
from aicert.verifier.tcg_events import EV_NO_ACTION
from aicert.verifier.tcg_log import parse_event_log
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

OVMF_LOG = (
    Path(__file__).parents[2] / "shared" / "testdata" / "ovmf-qemu" / "binary_bios_measurements"
)


def replay_log_into_tpm(tcti: str, log_bytes: bytes, pcrs: range = range(8)) -> None:
    """Extend every measured event of ``log_bytes`` for ``pcrs`` into the TPM at ``tcti``."""
    log = parse_event_log(log_bytes)
    esapi = ESAPI(tcti)
    try:
        for event in log.events:
            if event.event_type == EV_NO_ACTION or event.pcr not in pcrs:
                continue
            values = TPML_DIGEST_VALUES(
                [
                    TPMT_HA(
                        hashAlg=alg_id,
                        digest=TPMU_HA(**{ALGORITHMS_BY_ID[alg_id].name: digest}),
                    )
                    for alg_id, digest in event.digests.items()
                    if alg_id in ALGORITHMS_BY_ID
                ]
            )
            esapi.pcr_extend(ESYS_TR(event.pcr), values)
    finally:
        esapi.close()
