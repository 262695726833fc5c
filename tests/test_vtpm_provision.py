"""The local vTPM CA and provisioning a swtpm the way Azure provisions its vTPM."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from aicert.agent.tpm import AgentTpm
from aicert.builder.platforms.local.ca import (
    INTERMEDIATE_COMMON_NAME,
    ROOT_COMMON_NAME,
    TCG_KP_AIK_CERTIFICATE,
    TCG_KP_EK_CERTIFICATE,
    LocalCa,
)
from aicert.builder.platforms.local.provision import (
    AK_CERT_NV_INDEX,
    AK_HANDLE,
    provision_like_azure,
)
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import InputError, TpmError
from aicert.verifier.tpm.pcr import SHA256
from aicert.verifier.tpm.tpm2_structures import ALG_RSASSA, parse_tpm2b_public
from conftest import SWTPM_VM_ID, ProvisionedSwtpm
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aicert.process import run

# fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | sign,
# as tpm2_readpublic shows for Azure's AK (and openvmm's ak_pub_template sets).
AZURE_AK_ATTRIBUTES = 0x00050472
# OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD, plus WRITTEN once written.
AZURE_AK_CERT_NV_ATTRIBUTES = 0x20060006


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def tools(tcti: str, *argv: str | Path) -> bytes:
    proc = run(list(argv), env={"TPM2TOOLS_TCTI": tcti}, timeout=60)
    return proc.stdout or b""


# --------------------------------------------------------------------------- local CA


def test_local_ca_chain_has_azure_shape(local_ca: LocalCa) -> None:
    root, intermediate = local_ca.root_certificate, local_ca.intermediate_certificate
    assert common_name(root.subject) == ROOT_COMMON_NAME
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert common_name(intermediate.subject) == INTERMEDIATE_COMMON_NAME
    intermediate.verify_directly_issued_by(root)
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    ekus = intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ekus) == [TCG_KP_EK_CERTIFICATE]
    assert root.not_valid_after_utc > intermediate.not_valid_after_utc


def test_local_ca_persists_and_reloads(tmp_path: Path) -> None:
    first = LocalCa.load_or_create(tmp_path / "ca")
    again = LocalCa.load_or_create(tmp_path / "ca")
    assert again.root_certificate == first.root_certificate
    assert again.intermediate_certificate == first.intermediate_certificate
    for key in ("root-ca.key.pem", "intermediate-ca.key.pem"):
        assert stat.S_IMODE((tmp_path / "ca" / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    pem = first.root_path.read_bytes()
    assert x509.load_pem_x509_certificate(pem) == first.root_certificate
    assert first.chain_pem().count(b"BEGIN CERTIFICATE") == 2


def test_incomplete_local_ca_is_refused(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path / "ca")
    (ca.directory / "intermediate-ca.key.pem").unlink()
    with pytest.raises(InputError, match="incomplete"):
        LocalCa.load_or_create(tmp_path / "ca")


def test_ak_certificate_profile(local_ca: LocalCa, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = local_ca.issue_ak_certificate(key, "0e5c1d2a-vm")
    cert = x509.load_der_x509_certificate(der)
    assert common_name(cert.subject) == "0e5c1d2a-vm.TrustedVM.aicert.local"
    assert cert.issuer == local_ca.intermediate_certificate.subject
    assert cert.public_key() == key
    cert.verify_directly_issued_by(local_ca.intermediate_certificate)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert TCG_KP_AIK_CERTIFICATE in ekus
    assert ExtendedKeyUsageOID.SERVER_AUTH not in ekus
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS
    assert cert.not_valid_before_utc < cert.not_valid_after_utc
    # OpenSSL, an outside implementation, accepts the chain.
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    proc = run(
        [
            "openssl",
            "verify",
            "-CAfile",
            local_ca.root_path,
            "-untrusted",
            local_ca.intermediate_path,
            leaf,
        ]
    )
    assert b": OK" in (proc.stdout or b"")


@pytest.mark.parametrize("vm_id", ["", "a.b", "-vm", "x" * 64, "vm id", "vm/../x"])
def test_bad_vm_id_is_refused(local_ca: LocalCa, vm_id: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(InputError, match="VM id"):
        local_ca.issue_ak_certificate(key, vm_id)


# --------------------------------------------------------------------------- provisioning


@pytest.mark.swtpm
def test_provisioned_ak_matches_azure_template(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    public = parse_tpm2b_public(provisioned_swtpm.provisioned.ak_public)
    assert public.object_attributes == AZURE_AK_ATTRIBUTES
    assert public.is_restricted_signing_key
    assert public.name_alg == SHA256
    assert public.auth_policy == b""
    assert public.scheme.scheme == ALG_RSASSA
    assert public.scheme.hash_alg == SHA256
    key = public.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048

    # tpm2-tools reads the same key from the persistent handle.
    pem = tmp_path / "ak.pem"
    tools(provisioned_swtpm.tcti, "tpm2_readpublic", "-c", hex(AK_HANDLE), "-f", "pem", "-o", pem)
    assert serialization.load_pem_public_key(pem.read_bytes()) == key


@pytest.mark.swtpm
def test_provisioned_certificate_certifies_the_ak(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    cert_der = provisioned_swtpm.provisioned.ak_certificate
    cert = x509.load_der_x509_certificate(cert_der)
    assert common_name(cert.subject) == f"{SWTPM_VM_ID}.TrustedVM.aicert.local"
    cert.verify_directly_issued_by(provisioned_swtpm.ca.intermediate_certificate)
    ak = parse_tpm2b_public(provisioned_swtpm.provisioned.ak_public).public_key()
    assert cert.public_key() == ak

    # The index as tpm2-tools sees it: Azure's attributes, sized to the certificate...
    listing = tools(provisioned_swtpm.tcti, "tpm2_nvreadpublic", hex(AK_CERT_NV_INDEX)).decode()
    attributes = re.search(r"attributes:\s*\n\s*friendly: .*\n\s*value: (0x[0-9A-Fa-f]+)", listing)
    assert attributes is not None
    assert int(attributes.group(1), 16) == AZURE_AK_CERT_NV_ATTRIBUTES
    assert re.search(rf"size: {len(cert_der)}\b", listing)
    # ... readable with owner authorization, as `tpm2_nvread 0x1C101D0 -C o` on Azure.
    out = tmp_path / "akcert.der"
    tools(provisioned_swtpm.tcti, "tpm2_nvread", hex(AK_CERT_NV_INDEX), "-C", "o", "-o", out)
    assert out.read_bytes() == cert_der


@pytest.mark.swtpm
def test_reprovisioning_replaces_handle_and_certificate(
    provisioned_swtpm: ProvisionedSwtpm,
) -> None:
    first = provisioned_swtpm.provisioned
    second = provision_like_azure(provisioned_swtpm.tcti, provisioned_swtpm.ca, "second-vm")
    # A primary key is derived from the endorsement seed and the template: same AK again
    # (Azure likewise regenerates its AK from the seeds), newly certified.
    assert second.ak_public == first.ak_public
    assert second.ak_certificate != first.ak_certificate
    persistent = tools(provisioned_swtpm.tcti, "tpm2_getcap", "handles-persistent").decode()
    assert [int(h, 16) for h in persistent.split()[1::2]] == [AK_HANDLE]
    nv = tools(provisioned_swtpm.tcti, "tpm2_getcap", "handles-nv-index").decode()
    assert [int(h, 16) for h in nv.split()[1::2]] == [AK_CERT_NV_INDEX]
    with AgentTpm(provisioned_swtpm.tcti) as tpm:
        assert tpm.ak_public() == second.ak_public
        assert tpm.ak_certificate() == second.ak_certificate


@pytest.mark.swtpm
def test_provisioned_state_survives_a_restart(local_ca: LocalCa, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Swtpm.tcp(state) as tpm:
        result = provision_like_azure(tpm.tcti, local_ca, "restart-vm")
    with Swtpm.tcp(state) as tpm, AgentTpm(tpm.tcti) as agent_tpm:
        assert agent_tpm.ak_public() == result.ak_public
        assert agent_tpm.ak_certificate() == result.ak_certificate


def test_unreachable_tpm_is_a_tpm_error(local_ca: LocalCa) -> None:
    with pytest.raises(TpmError, match="cannot open the TPM"):
        provision_like_azure("swtpm:host=127.0.0.1,port=1", local_ca, "vm")
