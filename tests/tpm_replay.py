"""Replay a real boot into a swtpm, so its PCRs and the firmware log agree.

A swtpm started by a test has no firmware: its PCRs are zero. Extending the digests
of a real OVMF boot log (shared testdata) into them, then systemd-pcrphase's boot
phases into PCR 11 as the booted OS does, gives certificates whose firmware-log
check is meaningful: the verifier replays the same log to every PCR it covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aicert.verifier.boot.uki import PCRPHASE_WORDS
from aicert.verifier.logs.tcg_events import EV_NO_ACTION
from aicert.verifier.logs.tcg_log import EventLog, parse_event_log
from aicert.verifier.tpm.pcr import ALGORITHMS_BY_ID, HashAlgorithm
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

OVMF_LOG = (
    Path(__file__).parents[2] / "shared" / "testdata" / "ovmf-qemu" / "binary_bios_measurements"
)


def replay_log_into_tpm(tcti: str, log_bytes: bytes) -> None:
    """Boot the TPM at ``tcti``: every measured event of ``log_bytes``, then the boot phases."""
    log = parse_event_log(log_bytes)
    esapi = ESAPI(tcti)
    try:
        for event in log.events:
            if event.event_type != EV_NO_ACTION:
                _extend(esapi, event.pcr, event.digests)
        for word in PCRPHASE_WORDS:
            _extend(
                esapi, 11, {alg.tpm_id: alg.hash(word.encode()) for alg in _log_algorithms(log)}
            )
    finally:
        esapi.close()


def _log_algorithms(log: EventLog) -> list[HashAlgorithm]:
    return [ALGORITHMS_BY_ID[a] for a in log.algorithms if a in ALGORITHMS_BY_ID]


def _extend(esapi: ESAPI, pcr: int, digests: Mapping[int, bytes]) -> None:
    values = TPML_DIGEST_VALUES(
        [
            TPMT_HA(hashAlg=alg_id, digest=TPMU_HA(**{ALGORITHMS_BY_ID[alg_id].name: digest}))
            for alg_id, digest in digests.items()
            if alg_id in ALGORITHMS_BY_ID
        ]
    )
    esapi.pcr_extend(ESYS_TR(pcr), values)
