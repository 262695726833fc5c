"""Provision a TPM the way GCE provisions a Shielded VM's vTPM.

GCE keeps no persistent AK. Its vTPM holds, in NV (go-tpm-tools ``client/handles.go``):

- 0x01C10003: the ECC P-256 AK template, a marshalled TPMT_PUBLIC; 0x01C10002: the
  certificate of the key that template yields in the endorsement hierarchy;
- 0x01C10001 and 0x01C10000: the same for an RSA 2048 AK.

The templates written here are go-tpm-tools' ``AKTemplateECC`` and ``AKTemplateRSA``
(nameAlg SHA-256, ``FlagSignerDefault``: fixedTPM | fixedParent | sensitiveDataOrigin |
userWithAuth | restricted | sign; ECDSA-SHA256 on NIST P-256, RSASSA-SHA256 on RSA
2048). The indices are platform-created (the hypervisor writes them before the guest
boots) and readable with owner authorization; a swtpm started without firmware still
has its platform hierarchy open, so the tests can define them the same way. The
certificates come from the local CA in place of Google's "EK/AK CA Intermediate".
"""

from __future__ import annotations

from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import ProvisionResult
from aicert.verifier.errors import TpmError
from aicert.verifier.tpm.tpm2_structures import parse_tpm2b_public
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
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_NV_PUBLIC,
    TPMS_RSA_PARMS,
    TPMS_SCHEME_HASH,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_PARMS,
)

GCE_AK_CERT_NV_INDEX_RSA = 0x01C10000
GCE_AK_TEMPLATE_NV_INDEX_RSA = 0x01C10001
GCE_AK_CERT_NV_INDEX_ECC = 0x01C10002
GCE_AK_TEMPLATE_NV_INDEX_ECC = 0x01C10003

# go-tpm-tools' tpm2.FlagSignerDefault.
AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
NV_ATTRIBUTES = (
    TPMA_NV.PPWRITE | TPMA_NV.PPREAD | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA | TPMA_NV.PLATFORMCREATE
)
ALGORITHMS = ("ecc", "rsa")


def ak_template(algorithm: str) -> TPMT_PUBLIC:
    """go-tpm-tools' AKTemplateECC (``ecc``) or AKTemplateRSA (``rsa``)."""
    if algorithm == "ecc":
        return TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=AK_ATTRIBUTES,
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
    if algorithm == "rsa":
        return TPMT_PUBLIC(
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
    raise TpmError(f"unknown GCE AK algorithm {algorithm!r} (one of: {', '.join(ALGORITHMS)})")


def provision_like_gce(
    tcti: str, ca: LocalCa, vm_id: str, algorithms: tuple[str, ...] = ALGORITHMS
) -> ProvisionResult:
    """Write GCE's AK templates and certificates for ``algorithms`` into NV; the result
    names the AK the agent uses (the first of ``algorithms``)."""
    if not algorithms:
        raise TpmError("provisioning like GCE needs at least one AK algorithm")
    try:
        esapi = ESAPI(tcti)
    except TSS2_Exception as exc:
        raise TpmError(f"cannot open the TPM through '{tcti}': {exc}") from exc
    try:
        results = [_provision_one(esapi, ca, vm_id, algorithm) for algorithm in algorithms]
    except TSS2_Exception as exc:
        raise TpmError(f"provisioning the TPM like GCE failed: {exc}") from exc
    finally:
        esapi.close()
    return results[0]


def _provision_one(esapi: ESAPI, ca: LocalCa, vm_id: str, algorithm: str) -> ProvisionResult:
    template = ak_template(algorithm)
    handle, public, _data, _digest, _ticket = esapi.create_primary(
        None, TPM2B_PUBLIC(publicArea=template), ESYS_TR.ENDORSEMENT
    )
    esapi.flush_context(handle)
    ak_public = bytes(public.marshal())
    certificate = ca.issue_ak_certificate(parse_tpm2b_public(ak_public).public_key(), vm_id)
    if algorithm == "ecc":
        template_index, cert_index = GCE_AK_TEMPLATE_NV_INDEX_ECC, GCE_AK_CERT_NV_INDEX_ECC
    else:
        template_index, cert_index = GCE_AK_TEMPLATE_NV_INDEX_RSA, GCE_AK_CERT_NV_INDEX_RSA
    write_platform_index(esapi, template_index, bytes(template.marshal()))
    write_platform_index(esapi, cert_index, certificate)
    return ProvisionResult(vm_id, ak_public, certificate)


def write_platform_index(esapi: ESAPI, nv_index: int, content: bytes) -> None:
    """(Re)define ``nv_index`` in the platform hierarchy, as GCE does, holding ``content``."""
    if nv_index in _nv_handles(esapi):
        old = esapi.tr_from_tpmpublic(nv_index)
        esapi.nv_undefine_space(old, ESYS_TR.PLATFORM)
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=nv_index,
            nameAlg=TPM2_ALG.SHA256,
            attributes=NV_ATTRIBUTES,
            dataSize=len(content),
        )
    )
    index = esapi.nv_define_space(None, public, ESYS_TR.PLATFORM)
    try:
        _more, data = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
        chunk = int(data.data.tpmProperties[0].value)
        for offset in range(0, len(content), chunk):
            esapi.nv_write(
                index, content[offset : offset + chunk], offset, auth_handle=ESYS_TR.PLATFORM
            )
    finally:
        esapi.tr_close(index)


def _nv_handles(esapi: ESAPI) -> set[int]:
    _more, data = esapi.get_capability(TPM2_CAP.HANDLES, int(TPM2_HC.NV_INDEX_FIRST), 256)
    return {int(h) for h in data.data.handles}
