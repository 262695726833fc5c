"""Checking an agent's attestation before trusting its TLS key ("attested TLS").

``POST /v1/attestation`` answers with a quote of SHA-256 PCRs 0-15 whose extraData is
SHA-256("aicert-attestation-v1" || nonce), the PCR values, the AK and its certificate
chain, the firmware event log and the agent's CEL records so far. :func:`verify_attestation`
checks, with the verifier's own functions and failing closed at the first problem:

1. the AK certificate chains to a trusted root now, and certifies the AK; or, on
   NitroTPM, AWS's attestation document names the AK and this agent's key and its
   SHA-384 boot PCRs are the recipe's (``verifier/aws/nitro_ak.py``);
2. the quote is signed by that AK (restricted signing key, accepted scheme);
3. its extraData is SHA-256(domain || the client's fresh nonce);
4. it covers the SHA-256 bank of PCRs 0-15 and the PCR values hash to its digest;
   PCRs 12 and 13 are zero;
5. the firmware log's data-determined digests are honest and the log replays to PCRs 0-7;
6. the CEL records replay to PCR 15 and the first is ``agent-start`` naming the key
   whose SubjectPublicKeyInfo the TLS server presented, and that key is ``agentPublicKey``;
7. when a boot reference is given (a published recipe or a UKI), PCRs 4, 9, 11, 12, 13
   equal it.

Only then does the client pin the key and send anything else.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aicert.verifier.aws.nitro_ak import check_nitro_boot, describe, verify_nitro_ak
from aicert.verifier.boot.firmware_replay import verify_firmware_log
from aicert.verifier.errors import (
    AkChainError,
    BindingError,
    BootPcrError,
    FormatError,
    PcrDigestError,
)
from aicert.verifier.logs.cel import CelRecord, parse_cel, verify_cel
from aicert.verifier.logs.session_events import AgentStart, SessionEvent, parse_event
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.statement.certificate import agent_key_id
from aicert.verifier.statement.dsse import b64decode
from aicert.verifier.tpm.ak_chain import verify_ak_chain
from aicert.verifier.tpm.pcr import SHA256
from aicert.verifier.tpm.quote import verify_pcr_digest, verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import parse_tpm2b_public
from aicert.verifier.verify import (
    FIRMWARE_LOG_PCRS,
    REQUIRED_PCRS,
    ZERO_PCRS,
    BootReference,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ATTESTATION_DOMAIN = b"aicert-attestation-v1"


class AttestedKeyError(BindingError):
    """The TLS key the agent presents is not the key its measured boot attests."""

    check = "agent-key"


@dataclass(frozen=True)
class AttestedAgent:
    """What a verified attestation established about the agent."""

    agent_key_sha256: str
    agent_public_key: bytes
    agent_version: str
    boot_id: str
    pcrs: Mapping[int, bytes]
    events: tuple[SessionEvent, ...]
    ak_subject: str
    boot_checked: str

    @property
    def claimed(self) -> bool:
        """Whether someone already claimed the session (more than the agent-start record)."""
        return len(self.events) > 1


def attestation_extra_data(nonce: bytes) -> bytes:
    return hashlib.sha256(ATTESTATION_DOMAIN + nonce).digest()


def spki_sha256(certificate_der: bytes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo of a DER X.509 certificate."""
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
    except ValueError:
        raise FormatError("the agent's TLS certificate is not DER X.509") from None
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return agent_key_id(spki)


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"attestation: {where} must be an object")
    return value


def _pcr_values(raw: Mapping[str, Any]) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for key, value in raw.items():
        if not key.isdigit() or not 0 <= int(key) <= 23:
            raise FormatError(f"attestation: PCR index {key!r} is not 0-23")
        if not isinstance(value, str) or len(value) != 64:
            raise FormatError(f"attestation: PCR {key} must be 64 hex digits")
        try:
            pcrs[int(key)] = bytes.fromhex(value)
        except ValueError:
            raise FormatError(f"attestation: PCR {key} is not hex") from None
    return pcrs


def verify_attestation(
    doc: Mapping[str, Any],
    *,
    nonce: bytes,
    tls_key_sha256: str,
    trust_roots: Sequence[x509.Certificate],
    boot_reference: BootReference | None = None,
    at: datetime.datetime | None = None,
    intermediates: Sequence[bytes] = (),
) -> AttestedAgent:
    """Verify an attestation answer (see the module docstring); raise at the first failure."""
    tpm = _obj(doc.get("tpm"), "tpm")
    quote = _obj(tpm.get("quote"), "tpm.quote")
    attest_bytes = b64decode(quote.get("attest"), "tpm.quote.attest")
    signature = b64decode(quote.get("signature"), "tpm.quote.signature")
    pcrs = _pcr_values(_obj(_obj(tpm.get("pcrs"), "tpm.pcrs").get("sha256"), "tpm.pcrs.sha256"))
    certs = tpm.get("akCertificates")
    nitro_document = (
        b64decode(tpm["nitroDocument"], "tpm.nitroDocument") if "nitroDocument" in tpm else None
    )
    if not isinstance(certs, list) or (nitro_document is None) == (not certs):
        raise FormatError(
            "attestation: tpm must carry either a non-empty akCertificates array or a"
            " nitroDocument (NitroTPM), not both"
        )
    chain = [b64decode(c, f"tpm.akCertificates[{i}]") for i, c in enumerate(certs)]
    ak = parse_tpm2b_public(b64decode(tpm.get("akPublic"), "tpm.akPublic"))
    firmware_log = b64decode(tpm.get("firmwareEventLog"), "tpm.firmwareEventLog")
    records: tuple[CelRecord, ...] = parse_cel(tpm.get("celLog"))
    agent_public_key = b64decode(doc.get("agentPublicKey"), "agentPublicKey")

    when = at or datetime.datetime.now(datetime.UTC)
    ak_subject = (
        verify_ak_chain(chain[0], [*chain[1:], *intermediates], trust_roots, when, ak).leaf_subject
        if chain
        else ""  # named by the Nitro document below
    )
    attest = verify_quote_signature(attest_bytes, signature, ak)
    if attest.extra_data != attestation_extra_data(nonce):
        raise BindingError(
            "the attestation quote does not carry this client's nonce: it is not fresh"
        )
    selection = attest.pcr_selection
    if len(selection.banks) != 1 or selection.banks[0].alg != SHA256:
        raise PcrDigestError("the attestation quote must select exactly the SHA-256 bank")
    missing = sorted(set(REQUIRED_PCRS) - set(selection.banks[0].pcrs))
    if missing:
        raise PcrDigestError(f"the attestation quote does not cover PCRs {missing}")
    verify_pcr_digest(attest, pcrs, alg=SHA256)
    for pcr in ZERO_PCRS:
        if pcrs[pcr] != bytes(32):
            raise BootPcrError(f"PCR {pcr} is not zero: the boot loaded extra code or data")
    verify_firmware_log(parse_event_log(firmware_log), SHA256, pcrs, FIRMWARE_LOG_PCRS)
    verify_cel(records, pcrs[15])
    events = tuple(parse_event(r.content, f"CEL record {r.recnum}") for r in records)
    if not events or not isinstance(events[0], AgentStart):
        raise AttestedKeyError("PCR 15 does not begin with the agent's agent-start event")
    start = events[0]
    if agent_key_id(agent_public_key) != start.agent_key_sha256:
        raise AttestedKeyError("agentPublicKey is not the key the agent-start event measured")
    if tls_key_sha256 != start.agent_key_sha256:
        raise AttestedKeyError(
            "the TLS server key is not the agent key measured at agent start: "
            "the connection does not end at the attested agent"
        )
    if nitro_document is not None:
        # NitroTPM certifies no AK: AWS's document names it, for this image's boot only.
        if boot_reference is None:
            raise AkChainError(
                "a NitroTPM agent's AK can be checked only against the image's recipe"
            )
        nitro = verify_nitro_ak(nitro_document, ak, start.agent_key_sha256, trust_roots)
        check_nitro_boot(nitro, boot_reference)
        ak_subject = describe(nitro)
    boot_checked = "no boot reference given: the booted image was not checked"
    if boot_reference is not None:
        boot_reference.check(pcrs)
        boot_checked = f"boot PCRs equal {boot_reference.source}"
    return AttestedAgent(
        agent_key_sha256=start.agent_key_sha256,
        agent_public_key=agent_public_key,
        agent_version=start.agent_version,
        boot_id=start.boot_id,
        pcrs=pcrs,
        events=events,
        ak_subject=ak_subject,
        boot_checked=boot_checked,
    )
