"""The agent's access to the TPM: AK, AK certificate, PCR extends, reads and quotes.

Where the attestation key (AK) is depends on who provisioned the TPM, and the agent
takes whichever the TPM holds (:func:`AgentTpm.ak_source`):

- Azure Trusted Launch and the local QEMU + swtpm platform hold the AK at persistent
  handle 0x81000003 and its X.509 certificate (DER) in NV index 0x01C101D0 (the local
  one is provisioned by :mod:`aicert.builder.platforms.local.provision`);
- a GCE Shielded VM's vTPM holds no persistent AK but its template (a marshalled
  TPMT_PUBLIC) in NV 0x01C10003 (ECC P-256) or 0x01C10001 (RSA 2048), with the AK
  certificates in 0x01C10002 and 0x01C10000. As go-tpm-tools does
  (``client.GceAttestationKeyECC``), the agent creates the AK as a primary key in the
  endorsement hierarchy from that template; the endorsement seed makes it the same key
  the certificate certifies. ECC is preferred, as go-tpm-tools' attest command does;
- a TPM with neither (EC2's NitroTPM, which certifies no key) gets an AK the agent
  creates itself: an ECC P-256 primary from TCG's default AK template in the owner
  hierarchy. No certificate names it; what vouches for it is NitroTPM's attestation
  document, whose ``user_data`` is the AK's Name (:meth:`AgentTpm.ak_evidence`,
  :mod:`aicert.agent.nitro`).

Runs inside the image on Debian trixie's python3-tpm2-pytss 2.3.0 and on the host on
tpm2-pytss 3.0.0; it only uses ESAPI calls whose signatures are the same in both.

Extends go to every active PCR bank: ``extend(pcr, data)`` hashes ``data`` with each
bank's algorithm, so any bank can be replayed from the same event data and a verifier
need not trust which bank was chosen. Quotes cover the SHA-256 bank.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aicert.agent import nitro
from aicert.verifier.errors import InputError, TpmError
from aicert.verifier.input_file import MAX_FIRMWARE_LOG_BYTES, read_input_file
from aicert.verifier.tpm.pcr import ALGORITHMS_BY_ID, ALGORITHMS_BY_NAME, SHA256, HashAlgorithm
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_ECC,
    TPM2_HC,
    TPM2_PT_NV,
    TPMA_NV,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_ECC_PARMS,
    TPMS_SCHEME_HASH,
    TPMT_ECC_SCHEME,
    TPMT_HA,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_HA,
    TPMU_PUBLIC_PARMS,
)

AK_HANDLE = 0x81000003
AK_CERT_NV_INDEX = 0x01C101D0
# go-tpm-tools client/handles.go: GceAKCertNVIndexRSA/ECC, GceAKTemplateNVIndexRSA/ECC.
GCE_AK_CERT_NV_INDEX_RSA = 0x01C10000
GCE_AK_TEMPLATE_NV_INDEX_RSA = 0x01C10001
GCE_AK_CERT_NV_INDEX_ECC = 0x01C10002
GCE_AK_TEMPLATE_NV_INDEX_ECC = 0x01C10003
# A TPMT_PUBLIC template: an RSA modulus or ECC point in ``unique`` keeps it well
# under this; anything larger is not a key template.
_MAX_TEMPLATE_BYTES = 1024
PCR_COUNT = 24
# Resettable from the OS (PCR 16: debug; PCR 23: application support): never trusted,
# so never written.
FORBIDDEN_PCRS = frozenset({16, 23})
FIRMWARE_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")

# TPM2_PCR_Read returns at most 8 digests per call (TPML_DIGEST), whatever is asked.
_PCRS_PER_READ = 8
# Retries of a multi-call PCR read or a quote when an extend changed PCRs in between.
_QUOTE_ATTEMPTS = 5
# TPM2B_DATA holds at most sizeof(TPMU_HA), the largest digest (SHA-512).
_MAX_EXTRA_DATA = 64
_AK_REQUIRED_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class AkSource:
    """Where this TPM's AK and its certificate are."""

    name: str
    """``persistent`` (Azure, local), ``gce-ecc`` / ``gce-rsa`` or ``nitro``."""
    certificate_index: int | None
    """NV index of the AK certificate; None for ``nitro``, whose AK no certificate names."""
    template_index: int | None
    """NV index of the AK's template; None when the AK is persistent at 0x81000003 or
    the agent's own (``nitro``)."""


PERSISTENT_AK = AkSource("persistent", AK_CERT_NV_INDEX, None)
GCE_AK_ECC = AkSource("gce-ecc", GCE_AK_CERT_NV_INDEX_ECC, GCE_AK_TEMPLATE_NV_INDEX_ECC)
GCE_AK_RSA = AkSource("gce-rsa", GCE_AK_CERT_NV_INDEX_RSA, GCE_AK_TEMPLATE_NV_INDEX_RSA)
NITRO_AK = AkSource("nitro", None, None)
# TCG's default AK template (TCG EK Credential Profile / tpm2_createak's ecc default):
# restricted ECDSA-SHA256 signing key on P-256, empty unique, no authorization policy.
NITRO_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)


@dataclass(frozen=True)
class AkEvidence:
    """What vouches for the AK in a certificate: its certificate chain, or (NitroTPM)
    an attestation document naming it; exactly one of the two is non-empty."""

    certificates: tuple[bytes, ...]
    nitro_document: bytes


@dataclass(frozen=True)
class QuoteResult:
    """A TPM2_Quote over SHA-256 PCRs and the PCR values it covers.

    ``attest`` is the marshalled TPMS_ATTEST (no TPM2B size prefix; what
    ``tpm2_quote -m`` writes), ``signature`` the marshalled TPMT_SIGNATURE, and
    ``pcr_values`` the SHA-256 values whose digest the quote carries.
    """

    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]


class AgentTpm:
    """A connection to the TPM through a TCTI (``device:/dev/tpmrm0``, ``swtpm:host=…``)."""

    def __init__(self, tcti: str, *, event_log_path: Path = FIRMWARE_EVENT_LOG) -> None:
        self.tcti = tcti
        self.event_log_path = event_log_path
        try:
            self._esapi = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot open the TPM through '{tcti}': {exc}") from exc
        self._nv_buffer_max: int | None = None
        self._ak_source: AkSource | None = None
        self._created_ak: ESYS_TR | None = None

    def close(self) -> None:
        if self._created_ak is not None:
            # The connection goes away next, and a resource manager drops its objects.
            with contextlib.suppress(TSS2_Exception):
                self._esapi.flush_context(self._created_ak)
            self._created_ak = None
        self._esapi.close()

    def __enter__(self) -> AgentTpm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- attestation key and its certificate ---------------------------------------------

    @property
    def esapi(self) -> ESAPI:
        """The ESAPI connection, for :mod:`aicert.agent.nitro`'s NV scratch index."""
        return self._esapi

    def ak_source(self) -> AkSource:
        """Where the AK is: persistent at 0x81000003, else GCE's ECC, else GCE's RSA
        template in NV (each with its certificate index), else the agent's own (nitro).

        Whether the TPM is a NitroTPM shows only when the attestation document is asked
        for (:meth:`ak_evidence`): a TPM that is neither fails there."""
        if self._ak_source is None:
            persistent = self._handles(int(TPM2_HC.PERSISTENT_FIRST))
            nv = self.nv_indices()
            if AK_HANDLE in persistent:
                self._ak_source = PERSISTENT_AK
            else:
                for source in (GCE_AK_ECC, GCE_AK_RSA):
                    if {source.template_index, source.certificate_index} <= nv:
                        self._ak_source = source
                        break
                else:
                    self._ak_source = NITRO_AK
        return self._ak_source

    def ak_evidence(
        self, agent_public_key: bytes, intermediates: Sequence[bytes] = ()
    ) -> AkEvidence:
        """What vouches for the AK, for a certificate: its certificate and
        ``intermediates``; on NitroTPM a fresh attestation document instead, whose
        ``user_data`` is the AK's Name and ``nonce`` SHA-256 of ``agent_public_key``
        (the agent key's SubjectPublicKeyInfo DER). Ask right after the quote, so the
        document's PCRs are those of the quote's moment."""
        if self.ak_source() != NITRO_AK:
            return AkEvidence((self.ak_certificate(), *intermediates), b"")
        document = nitro.request_attestation_document(
            self, user_data=self.ak_name(), nonce=hashlib.sha256(agent_public_key).digest()
        )
        return AkEvidence((), document)

    def ak_public(self) -> bytes:
        """The marshalled TPM2B_PUBLIC of the AK."""
        public, _name = self._ak_read_public()
        attributes = int(public.publicArea.objectAttributes)
        if attributes & _AK_REQUIRED_ATTRIBUTES != _AK_REQUIRED_ATTRIBUTES:
            raise TpmError(
                f"the {self.ak_source().name} attestation key is not a restricted signing key"
                f" bound to this TPM (attributes 0x{attributes:08x})"
            )
        return bytes(public.marshal())

    def ak_name(self) -> bytes:
        """The AK's TPM Name: nameAlg (2 bytes) || its hash of the marshalled TPMT_PUBLIC,
        as the TPM reports it."""
        _public, name = self._ak_read_public()
        return name

    def _ak_read_public(self) -> tuple[TPM2B_PUBLIC, bytes]:
        handle, owned = self._ak_handle()
        try:
            public, name, _qualified = self._call(
                "ReadPublic of the attestation key", self._esapi.read_public, handle
            )
        finally:
            if owned:
                self._esapi.tr_close(handle)
        # TPM2B_NAME marshals as a 2-byte size, then the Name.
        return public, bytes(name.marshal())[2:]

    def ak_certificate(self) -> bytes:
        """The AK certificate (DER) from its NV index, without any padding after it."""
        index = self.ak_source().certificate_index
        if index is None:
            raise TpmError(
                f"the TPM holds no AK certificate: no AK persistent at 0x{AK_HANDLE:08x}"
                f" (Azure, local), no GCE AK template and certificate in NV"
                f" 0x{GCE_AK_TEMPLATE_NV_INDEX_ECC:08x}/0x{GCE_AK_CERT_NV_INDEX_ECC:08x} or"
                f" 0x{GCE_AK_TEMPLATE_NV_INDEX_RSA:08x}/0x{GCE_AK_CERT_NV_INDEX_RSA:08x};"
                " only a NitroTPM's attestation document can vouch for the agent's own AK"
            )
        return _trim_der(self._read_nv(index, "AK certificate"))

    def _read_nv(self, nv_index: int, what: str) -> bytes:
        """All of NV index ``nv_index``, read in chunks of at most TPM2_PT_NV_BUFFER_MAX."""
        index = self._tr_from_tpmpublic(nv_index, f"{what} NV index")
        try:
            nv_public, _name = self._call(
                f"NV_ReadPublic of the {what} index", self._esapi.nv_read_public, index
            )
            size = int(nv_public.nvPublic.dataSize)
            attributes = int(nv_public.nvPublic.attributes)
            if not attributes & TPMA_NV.WRITTEN:
                raise TpmError(f"NV index 0x{nv_index:08x} was never written")
            # Azure defines its index with AUTHREAD and OWNERREAD and an empty
            # authorization value; prefer the index's own authorization. GCE's are read
            # with owner authorization (go-tpm-tools reads them so).
            if attributes & TPMA_NV.AUTHREAD:
                auth = index
            elif attributes & TPMA_NV.OWNERREAD:
                auth = ESYS_TR.OWNER
            else:
                raise TpmError(
                    f"NV index 0x{nv_index:08x} is readable neither with its own nor"
                    " with owner authorization"
                )
            chunk = self.nv_buffer_max()
            data = bytearray()
            while len(data) < size:
                part = self._call(
                    f"NV_Read of the {what}",
                    self._esapi.nv_read,
                    index,
                    min(chunk, size - len(data)),
                    len(data),
                    auth_handle=auth,
                )
                if not bytes(part):
                    raise TpmError(f"NV_Read of the {what} returned no data")
                data += bytes(part)
        finally:
            self._esapi.tr_close(index)
        return bytes(data)

    def _ak_handle(self) -> tuple[ESYS_TR, bool]:
        """The AK's handle, and whether the caller must tr_close it (a persistent one)."""
        source = self.ak_source()
        if source == PERSISTENT_AK:
            return self._tr_from_tpmpublic(AK_HANDLE, "attestation key"), True
        if self._created_ak is None:
            if source.template_index is None:
                self._created_ak = self._create_primary_ak(
                    nitro_ak_template(), ESYS_TR.OWNER, "CreatePrimary of the attestation key"
                )
            else:
                self._created_ak = self._create_ak_from_template(source.template_index)
        return self._created_ak, False

    def _create_ak_from_template(self, template_index: int) -> ESYS_TR:
        raw = self._read_nv(template_index, "AK template")
        if not 0 < len(raw) <= _MAX_TEMPLATE_BYTES:
            raise TpmError(
                f"NV index 0x{template_index:08x} holds {len(raw)} bytes, not an AK template"
            )
        try:
            template, used = TPMT_PUBLIC.unmarshal(raw)
        except (TSS2_Exception, ValueError, IndexError) as exc:
            raise TpmError(
                f"NV index 0x{template_index:08x} does not hold a TPMT_PUBLIC template: {exc}"
            ) from exc
        if used != len(raw):
            raise TpmError(
                f"NV index 0x{template_index:08x} holds {len(raw) - used} bytes after the AK"
                " template"
            )
        return self._create_primary_ak(
            template, ESYS_TR.ENDORSEMENT, "CreatePrimary of the attestation key from its template"
        )

    def _create_primary_ak(self, template: TPMT_PUBLIC, hierarchy: ESYS_TR, what: str) -> ESYS_TR:
        handle, _public, _data, _digest, _ticket = self._call(
            what, self._esapi.create_primary, None, TPM2B_PUBLIC(publicArea=template), hierarchy
        )
        created: ESYS_TR = handle
        return created

    def nv_indices(self) -> set[int]:
        """The NV indices the TPM holds."""
        return self._handles(int(TPM2_HC.NV_INDEX_FIRST))

    def _handles(self, first: int) -> set[int]:
        """The handles of one type (persistent or NV) the TPM lists from ``first`` on."""
        handles: set[int] = set()
        more, start = True, first
        while more:
            more, data = self._call(
                "GetCapability(TPM2_CAP_HANDLES)",
                self._esapi.get_capability,
                TPM2_CAP.HANDLES,
                start,
                64,
            )
            found = [int(h) for h in data.data.handles]
            # Stop at the end of this handle type: the TPM lists the next types too.
            found = [h for h in found if h >> 24 == first >> 24]
            if not found:
                break
            handles.update(found)
            start = max(found) + 1
        return handles

    def nv_buffer_max(self) -> int:
        """TPM2_PT_NV_BUFFER_MAX: the largest NV_Read/NV_Write this TPM accepts."""
        if self._nv_buffer_max is None:
            self._nv_buffer_max = self._nv_property(TPM2_PT_NV.BUFFER_MAX, "BUFFER_MAX")
        return self._nv_buffer_max

    def nv_index_max(self) -> int:
        """TPM2_PT_NV_INDEX_MAX: the largest NV index this TPM can define."""
        return self._nv_property(TPM2_PT_NV.INDEX_MAX, "INDEX_MAX")

    def _nv_property(self, prop: TPM2_PT_NV, name: str) -> int:
        _more, data = self._call(
            f"GetCapability(TPM2_PT_NV_{name})",
            self._esapi.get_capability,
            TPM2_CAP.TPM_PROPERTIES,
            prop,
            1,
        )
        properties = data.data.tpmProperties
        if len(properties) < 1 or int(properties[0].property) != int(prop):
            raise TpmError(f"the TPM did not report TPM2_PT_NV_{name}")
        return int(properties[0].value)

    # -- PCRs ------------------------------------------------------------------------------

    def active_banks(self, pcr: int) -> list[HashAlgorithm]:
        """The hash algorithms of the PCR banks in which ``pcr`` is allocated."""
        _check_pcr(pcr)
        _more, data = self._call(
            "GetCapability(TPM2_CAP_PCRS)", self._esapi.get_capability, TPM2_CAP.PCRS, 0, 1
        )
        banks: list[HashAlgorithm] = []
        for selection in data.data.assignedPCR:
            selected = bytes(selection.pcrSelect)[: int(selection.sizeofSelect)]
            if pcr // 8 >= len(selected) or not selected[pcr // 8] & (1 << (pcr % 8)):
                continue
            alg_id = int(selection.hash)
            if alg_id not in ALGORITHMS_BY_ID:
                # An active bank the agent cannot hash for would stay unreplayable.
                raise TpmError(f"PCR bank with hash algorithm 0x{alg_id:04x} is not supported")
            banks.append(ALGORITHMS_BY_ID[alg_id])
        if not banks:
            raise TpmError(f"PCR {pcr} is allocated in no bank")
        return banks

    def extend(self, pcr: int, data: bytes) -> dict[str, bytes]:
        """Extend ``pcr`` in every active bank with that bank's hash of ``data``.

        Returns the digest extended per algorithm name (``{"sha256": …, "sha1": …}``).
        PCRs 16 and 23 are refused.
        """
        _check_pcr(pcr)
        if pcr in FORBIDDEN_PCRS:
            raise TpmError(f"PCR {pcr} is resettable from the OS and is never extended")
        digests = {alg.name: alg.hash(data) for alg in self.active_banks(pcr)}
        values = TPML_DIGEST_VALUES(
            [
                # TPMU_HA's members are named like hashlib's algorithms (sha1, sha256, ...).
                TPMT_HA(hashAlg=ALGORITHMS_BY_NAME[name].tpm_id, digest=TPMU_HA(**{name: digest}))
                for name, digest in digests.items()
            ]
        )
        self._call(f"PCR_Extend of PCR {pcr}", self._esapi.pcr_extend, ESYS_TR(pcr), values)
        return digests

    def read_pcrs(
        self, alg: str = "sha256", pcrs: Iterable[int] = range(PCR_COUNT)
    ) -> dict[int, bytes]:
        """The values of ``pcrs`` in the ``alg`` bank, as one consistent snapshot.

        Several PCR_Read calls may be needed; they are repeated until the TPM's PCR
        update counter is the same for all, so no extend fell between them.
        """
        wanted = list(pcrs)
        for _ in range(_QUOTE_ATTEMPTS):
            counters, values = self._read_pcrs(alg, wanted)
            if len(set(counters)) == 1:
                return values
        raise TpmError(
            f"PCRs kept changing while being read; gave up after {_QUOTE_ATTEMPTS} attempts"
        )

    def _read_pcrs(self, alg: str, pcrs: Iterable[int]) -> tuple[list[int], dict[int, bytes]]:
        """PCR values and the TPM's PCR update counter seen by each PCR_Read."""
        if alg not in ALGORITHMS_BY_NAME:
            raise TpmError(f"unknown PCR bank '{alg}'")
        wanted = sorted(set(pcrs))
        for pcr in wanted:
            _check_pcr(pcr)
        values: dict[int, bytes] = {}
        counters: list[int] = []
        remaining = wanted
        while remaining:
            batch = remaining[:_PCRS_PER_READ]
            counter, selection, digests = self._call(
                "PCR_Read", self._esapi.pcr_read, _selection(alg, batch)
            )
            counters.append(int(counter))
            returned = _selected_pcrs(selection, ALGORITHMS_BY_NAME[alg].tpm_id)
            if not returned or len(returned) != len(digests):
                raise TpmError(f"PCR_Read returned no usable {alg} values for PCRs {batch}")
            for pcr, digest in zip(returned, digests, strict=True):
                values[pcr] = bytes(digest)
            remaining = [pcr for pcr in remaining if pcr not in values]
        return counters, values

    # -- quote -----------------------------------------------------------------------------

    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> QuoteResult:
        """Quote the SHA-256 ``pcrs`` with the AK, binding ``extra_data`` (at most 64 bytes).

        The PCR values are read around the quote and retried until they hash to the
        quote's pcrDigest, so an extend racing the quote cannot yield a mismatched pair.
        """
        wanted = sorted(set(pcrs))
        if not wanted:
            raise TpmError("a quote needs at least one PCR")
        if len(extra_data) > _MAX_EXTRA_DATA:
            raise TpmError(
                f"quote extraData is {len(extra_data)} bytes; the TPM takes at most"
                f" {_MAX_EXTRA_DATA}"
            )
        for pcr in wanted:
            _check_pcr(pcr)
        handle, owned = self._ak_handle()
        try:
            for _ in range(_QUOTE_ATTEMPTS):
                counters, values = self._read_pcrs(SHA256.name, wanted)
                attest2b, signature = self._call(
                    "Quote",
                    self._esapi.quote,
                    handle,
                    _selection(SHA256.name, wanted),
                    extra_data,
                    TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                )
                # TPM2B_ATTEST marshals as a 2-byte size then the TPMS_ATTEST.
                attest = bytes(attest2b.marshal())[2:]
                quoted, _offset = TPMS_ATTEST.unmarshal(attest)
                pcr_digest = bytes(quoted.attested.quote.pcrDigest)
                expected = hashlib.sha256(b"".join(values[p] for p in wanted)).digest()
                if pcr_digest == expected and len(set(counters)) == 1:
                    return QuoteResult(attest, bytes(signature.marshal()), values)
        finally:
            if owned:
                self._esapi.tr_close(handle)
        raise TpmError(
            f"PCRs kept changing during the quote; gave up after {_QUOTE_ATTEMPTS} attempts"
        )

    # -- firmware log ----------------------------------------------------------------------

    def firmware_event_log(self) -> bytes:
        """The firmware's TCG event log as the kernel exposes it."""
        try:
            return read_input_file(
                self.event_log_path, "the firmware event log", MAX_FIRMWARE_LOG_BYTES
            )
        except InputError as exc:
            raise TpmError(str(exc)) from None

    # -- helpers ---------------------------------------------------------------------------

    def _tr_from_tpmpublic(self, handle: int, what: str) -> ESYS_TR:
        try:
            tr: ESYS_TR = self._esapi.tr_from_tpmpublic(handle)
        except TSS2_Exception as exc:
            raise TpmError(f"the TPM holds no {what} at 0x{handle:08x}: {exc}") from exc
        return tr

    def _call(self, what: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return function(*args, **kwargs)
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_{what} failed: {exc}") from exc


def nitro_ak_template() -> TPMT_PUBLIC:
    """TCG's default ECC AK template: the key the agent makes on a NitroTPM."""
    return TPMT_PUBLIC(
        type=TPM2_ALG.ECC,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=NITRO_AK_ATTRIBUTES,
        parameters=TPMU_PUBLIC_PARMS(
            eccDetail=TPMS_ECC_PARMS(
                symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                scheme=TPMT_ECC_SCHEME(
                    scheme=TPM2_ALG.ECDSA,
                    details=TPMU_ASYM_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
                ),
                curveID=TPM2_ECC.NIST_P256,
                kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
            )
        ),
    )


def _check_pcr(pcr: int) -> None:
    if not isinstance(pcr, int) or isinstance(pcr, bool) or not 0 <= pcr < PCR_COUNT:
        raise TpmError(f"PCR index {pcr!r} is not in 0..{PCR_COUNT - 1}")


def _selection(alg: str, pcrs: Sequence[int]) -> TPML_PCR_SELECTION:
    return TPML_PCR_SELECTION.parse(f"{alg}:{','.join(str(p) for p in pcrs)}")


def _selected_pcrs(selection: TPML_PCR_SELECTION, alg_id: int) -> list[int]:
    """PCR numbers a TPML_PCR_SELECTION selects in bank ``alg_id``, ascending (TPM order)."""
    pcrs: list[int] = []
    for bank in selection:
        if int(bank.hash) != alg_id:
            continue
        selected = bytes(bank.pcrSelect)[: int(bank.sizeofSelect)]
        pcrs += [i for i in range(len(selected) * 8) if selected[i // 8] & (1 << (i % 8))]
    return sorted(pcrs)


def _trim_der(data: bytes) -> bytes:
    """The DER certificate at the start of ``data``; what follows must be zero padding
    (Azure may define the index larger than the certificate)."""
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError("the AK certificate NV index does not hold a DER certificate")
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise TpmError("the AK certificate in NV has a malformed DER length")
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    end = header + length
    if end > len(data):
        raise TpmError(
            f"the AK certificate in NV is truncated: DER says {end} bytes, the index holds"
            f" {len(data)}"
        )
    if any(data[end:]):
        raise TpmError("the AK certificate NV index holds data after the certificate")
    return data[:end]
