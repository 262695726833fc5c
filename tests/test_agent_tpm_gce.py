"""The agent's TPM access on a real swtpm provisioned like GCE's Shielded VM vTPM."""

from __future__ import annotations

import hashlib

import pytest
from aicert.agent.tpm import GCE_AK_ECC, GCE_AK_RSA, PERSISTENT_AK, AgentTpm
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.gce_vtpm import (
    GCE_AK_TEMPLATE_NV_INDEX_ECC,
    ak_template,
    provision_like_gce,
    write_platform_index,
)
from aicert.builder.platforms.local.provision import ProvisionResult, provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import AkMismatchError, QuoteSignatureError, TpmError
from aicert.verifier.tpm.ak_chain import verify_ak_chain
from aicert.verifier.tpm.quote import verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import EcdsaSignature, parse_signature, parse_tpm2b_public
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

pytestmark = pytest.mark.swtpm

NONCE = hashlib.sha256(b"statement PAE").digest()
QUOTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 15]
_DER = Encoding.DER


@pytest.fixture
def gce_swtpm(running_swtpm: Swtpm, local_ca: LocalCa) -> ProvisionResult:
    return provision_like_gce(running_swtpm.tcti, local_ca, "gce-test-vm")


def test_the_ecc_ak_is_created_from_its_template_and_matches_its_certificate(
    running_swtpm: Swtpm, gce_swtpm: ProvisionResult, local_ca: LocalCa
) -> None:
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.ak_source() == GCE_AK_ECC
        assert tpm.ak_public() == gce_swtpm.ak_public
        der = tpm.ak_certificate()
    assert der == gce_swtpm.ak_certificate
    ak = parse_tpm2b_public(gce_swtpm.ak_public)
    assert isinstance(ak.public_key(), ec.EllipticCurvePublicKey)
    when = x509.load_der_x509_certificate(der).not_valid_before_utc
    result = verify_ak_chain(
        der,
        [local_ca.intermediate_certificate.public_bytes(_DER)],
        [local_ca.root_certificate],
        when,
        ak,
    )
    assert result.root == local_ca.root_certificate


def test_a_quote_by_the_gce_ak_verifies_and_binds_the_nonce(
    running_swtpm: Swtpm, gce_swtpm: ProvisionResult
) -> None:
    with AgentTpm(running_swtpm.tcti) as tpm:
        tpm.extend(15, b"training code")
        quote = tpm.quote(QUOTED_PCRS, NONCE)
        again = tpm.quote(QUOTED_PCRS, NONCE)  # the created AK is reused, not re-created
    assert isinstance(parse_signature(quote.signature), EcdsaSignature)
    ak = parse_tpm2b_public(gce_swtpm.ak_public)
    attest = verify_quote_signature(quote.attest, quote.signature, ak)
    assert attest.extra_data == NONCE
    verify_quote_signature(again.attest, again.signature, ak)
    with pytest.raises(QuoteSignatureError):
        verify_quote_signature(quote.attest[:-1] + b"\x00", quote.signature, ak)


def test_only_the_rsa_ak_is_used_when_the_ecc_one_is_absent(
    running_swtpm: Swtpm, local_ca: LocalCa
) -> None:
    provisioned = provision_like_gce(running_swtpm.tcti, local_ca, "gce-rsa-vm", ("rsa",))
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.ak_source() == GCE_AK_RSA
        assert tpm.ak_public() == provisioned.ak_public
        assert tpm.ak_certificate() == provisioned.ak_certificate
        quote = tpm.quote([15], NONCE)
    ak = parse_tpm2b_public(provisioned.ak_public)
    assert isinstance(ak.public_key(), rsa.RSAPublicKey)
    verify_quote_signature(quote.attest, quote.signature, ak)


def test_a_persistent_ak_wins_over_gce_templates(running_swtpm: Swtpm, local_ca: LocalCa) -> None:
    provision_like_gce(running_swtpm.tcti, local_ca, "gce-test-vm")
    azure = provision_like_azure(running_swtpm.tcti, local_ca, "azure-test-vm")
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.ak_source() == PERSISTENT_AK
        assert tpm.ak_public() == azure.ak_public


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x23", "does not hold a TPMT_PUBLIC template"),
        (b"\x00" * 1025, "holds 1025 bytes, not an AK template"),
    ],
)
def test_a_template_index_without_a_template_is_refused(
    running_swtpm: Swtpm, gce_swtpm: ProvisionResult, content: bytes, message: str
) -> None:
    with AgentTpm(running_swtpm.tcti) as tpm:
        write_platform_index(tpm._esapi, GCE_AK_TEMPLATE_NV_INDEX_ECC, content)
        with pytest.raises(TpmError, match=message):
            tpm.ak_public()


def test_a_template_with_trailing_bytes_is_refused(
    running_swtpm: Swtpm, gce_swtpm: ProvisionResult
) -> None:
    with AgentTpm(running_swtpm.tcti) as tpm:
        template = tpm._read_nv(GCE_AK_TEMPLATE_NV_INDEX_ECC, "AK template")
        write_platform_index(tpm._esapi, GCE_AK_TEMPLATE_NV_INDEX_ECC, template + b"\x01")
        with pytest.raises(TpmError, match="1 bytes after the AK template"):
            tpm.ak_public()


def test_a_template_for_a_different_key_fails_the_chain(
    running_swtpm: Swtpm, gce_swtpm: ProvisionResult, local_ca: LocalCa
) -> None:
    """A template swapped for another (here the RSA one) yields a key the ECC
    certificate does not certify: the verifier's key match catches it."""
    with AgentTpm(running_swtpm.tcti) as tpm:
        write_platform_index(
            tpm._esapi, GCE_AK_TEMPLATE_NV_INDEX_ECC, bytes(ak_template("rsa").marshal())
        )
        ak = parse_tpm2b_public(tpm.ak_public())
        der = tpm.ak_certificate()
    when = x509.load_der_x509_certificate(der).not_valid_before_utc
    with pytest.raises(AkMismatchError):
        verify_ak_chain(
            der,
            [local_ca.intermediate_certificate.public_bytes(_DER)],
            [local_ca.root_certificate],
            when,
            ak,
        )
