"""Provision a TPM the way Azure provisions its Trusted Launch vTPM.

What Azure's vTPM holds when a VM boots, and what :func:`provision_like_azure` puts
into a (software) TPM, with the local CA in place of Azure's:

- an attestation key (AK) created as a primary key in the endorsement hierarchy from
  the template Microsoft's vTPM code uses (openvmm ``ak_pub_template``): RSA 2048,
  nameAlg SHA-256, empty authPolicy, symmetric NULL, scheme RSASSA-SHA256, exponent
  default, attributes fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth |
  noDA | restricted | sign — persisted at handle 0x81000003. (The AK Azure's
  provisioning service makes for Trusted Launch VMs also carries an authPolicy whose
  contents are not public; userWithAuth is set there too, so an empty password
  authorizes quotes on both);
- its certificate (DER, see :mod:`aicert.builder.platforms.local.ca`) in NV index 0x01C101D0,
  defined by the owner the way Azure's provisioning service defines it: ordinary
  index, nameAlg SHA-256, empty authorization value and policy, attributes
  OWNERWRITE | OWNERREAD | AUTHWRITE | AUTHREAD, size = certificate length. Anyone
  in the guest can therefore read it (empty index password), as on Azure.

Re-provisioning evicts the old AK and undefines the old index first. The AK, being a
primary key derived from the endorsement seed and a fixed template, comes out the same
again (as on Azure, which regenerates it from the seeds); only the certificate is new.
"""

from __future__ import annotations

from dataclasses import dataclass

from aicert.builder.platforms.local.ca import LocalCa
from aicert.verifier.errors import TpmError
from cryptography.hazmat.primitives.asymmetric import rsa
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HC,
    TPM2_PT_NV,
    TPMA_NV,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPMS_NV_PUBLIC,
    TPMS_RSA_PARMS,
    TPMS_SCHEME_HASH,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_PARMS,
)

AK_HANDLE = 0x81000003
AK_CERT_NV_INDEX = 0x01C101D0

AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
AK_CERT_NV_ATTRIBUTES = (
    TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
)
_DEFAULT_RSA_EXPONENT = 65537


@dataclass(frozen=True)
class ProvisionResult:
    """What was provisioned: the AK's marshalled TPM2B_PUBLIC and its certificate (DER)."""

    vm_id: str
    ak_public: bytes
    ak_certificate: bytes


def ak_template() -> TPM2B_PUBLIC:
    """The AK template of Azure's vTPM (openvmm ``tpm_helper::ak_pub_template``)."""
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.RSA,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=AK_ATTRIBUTES,
            parameters=TPMU_PUBLIC_PARMS(
                rsaDetail=TPMS_RSA_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                    scheme=TPMT_RSA_SCHEME(
                        scheme=TPM2_ALG.RSASSA,
                        details=TPMU_ASYM_SCHEME(rsassa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
                    ),
                    keyBits=2048,
                    exponent=0,
                )
            ),
        )
    )


def provision_like_azure(tcti: str, ca: LocalCa, vm_id: str) -> ProvisionResult:
    """Create and persist the AK, certify it with ``ca`` and store the certificate in NV."""
    try:
        esapi = ESAPI(tcti)
    except TSS2_Exception as exc:
        raise TpmError(f"cannot open the TPM through '{tcti}': {exc}") from exc
    try:
        ak_public = _create_persistent_ak(esapi)
        certificate = ca.issue_ak_certificate(_rsa_key(ak_public), vm_id)
        store_ak_certificate(esapi, certificate)
        return ProvisionResult(vm_id, bytes(ak_public.marshal()), certificate)
    except TSS2_Exception as exc:
        raise TpmError(f"provisioning the TPM failed: {exc}") from exc
    finally:
        esapi.close()


def _handles(esapi: ESAPI, first: int) -> set[int]:
    """The handles the TPM lists from ``first`` on (one handle type: persistent or NV)."""
    handles: set[int] = set()
    more, start = True, first
    while more:
        more, data = esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
        found = [int(h) for h in data.data.handles]
        if not found:
            break
        handles.update(found)
        start = max(found) + 1
    return handles


def _create_persistent_ak(esapi: ESAPI) -> TPM2B_PUBLIC:
    if AK_HANDLE in _handles(esapi, int(TPM2_HC.PERSISTENT_FIRST)):
        old = esapi.tr_from_tpmpublic(AK_HANDLE)
        esapi.evict_control(ESYS_TR.OWNER, old, AK_HANDLE)
    transient, public, _data, _digest, _ticket = esapi.create_primary(
        None, ak_template(), ESYS_TR.ENDORSEMENT
    )
    try:
        persistent = esapi.evict_control(ESYS_TR.OWNER, transient, AK_HANDLE)
        esapi.tr_close(persistent)
    finally:
        esapi.flush_context(transient)
    return public


def _rsa_key(public: TPM2B_PUBLIC) -> rsa.RSAPublicKey:
    area = public.publicArea
    modulus = int.from_bytes(bytes(area.unique.rsa), "big")
    exponent = int(area.parameters.rsaDetail.exponent) or _DEFAULT_RSA_EXPONENT
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _tpm_property(esapi: ESAPI, prop: int, name: str) -> int:
    _more, data = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, prop, 1)
    properties = data.data.tpmProperties
    if len(properties) < 1 or int(properties[0].property) != int(prop):
        raise TpmError(f"the TPM did not report {name}")
    return int(properties[0].value)


def store_ak_certificate(esapi: ESAPI, certificate: bytes) -> None:
    """(Re)define the AK certificate NV index as Azure does and write ``certificate`` to
    it, in chunks no larger than the TPM's NV buffer."""
    index_max = _tpm_property(esapi, TPM2_PT_NV.INDEX_MAX, "TPM2_PT_NV_INDEX_MAX")
    if len(certificate) > index_max:
        raise TpmError(
            f"the AK certificate ({len(certificate)} bytes) exceeds the TPM's largest NV index"
            f" ({index_max} bytes)"
        )
    if AK_CERT_NV_INDEX in _handles(esapi, int(TPM2_HC.NV_INDEX_FIRST)):
        old = esapi.tr_from_tpmpublic(AK_CERT_NV_INDEX)
        esapi.nv_undefine_space(old, ESYS_TR.OWNER)
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=AK_CERT_NV_INDEX,
            nameAlg=TPM2_ALG.SHA256,
            attributes=AK_CERT_NV_ATTRIBUTES,
            dataSize=len(certificate),
        )
    )
    index = esapi.nv_define_space(None, public, ESYS_TR.OWNER)
    try:
        chunk = _tpm_property(esapi, TPM2_PT_NV.BUFFER_MAX, "TPM2_PT_NV_BUFFER_MAX")
        for offset in range(0, len(certificate), chunk):
            esapi.nv_write(
                index, certificate[offset : offset + chunk], offset, auth_handle=ESYS_TR.OWNER
            )
    finally:
        esapi.tr_close(index)
