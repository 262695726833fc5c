"""A stand-in GPU for tests: SPDM GET_MEASUREMENTS reports signed by a P-384 device chain.

No CC-mode GPU is available to the tests, so this builds evidence in exactly the layout
of NVIDIA's published Hopper sample (tests/data/nvidia/), under a device CA of its own;
the verifier is then given that CA as its GPU root.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass, field

from aicert.agent.gpu_attestation import RawEvidence
from aicert.verifier.gpu.rim_signature import C14N11, ECDSA_SHA384, ENVELOPED, SHA384
from aicert.verifier.gpu.xml_c14n import canonicalize, parse_document
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DRIVER = "550.90.07"
VBIOS = "96.00.9F.00.01"


def vbios_field(version: str) -> bytes:
    """The 8-byte opaque field of a dotted VBIOS version (a.b.c.d.e → d c b a e 0 0 0)."""
    a, b, c, d, e = (int(p, 16) for p in version.split("."))
    return bytes([d, c, b, a, e, 0, 0, 0])


VBIOS_FIELD = vbios_field(VBIOS)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


VALID_FROM = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # From a fixed past date: tests also check at fixed times (the NVIDIA sample's).
        .not_valid_before(VALID_FROM)
        .not_valid_after(now + datetime.timedelta(days=365))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(signer, hashes.SHA384())


@dataclass
class FakeDeviceCa:
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.root = _cert(
            "Test GPU Device Root", self.root_key, "Test GPU Device Root", self.root_key, ca=True
        )
        self.ica_key = ec.generate_private_key(ec.SECP384R1())
        self.ica = _cert(
            "Test GH100 ICA", self.ica_key, "Test GPU Device Root", self.root_key, ca=True
        )

    def device(self) -> tuple[ec.EllipticCurvePrivateKey, tuple[bytes, ...]]:
        key = ec.generate_private_key(ec.SECP384R1())
        leaf = _cert("Test GH100 GSP FMC LF", key, "Test GH100 ICA", self.ica_key, ca=False)
        chain = (leaf, self.ica, self.root)
        return key, tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)


def measurement_values(count: int = 8) -> list[bytes]:
    return [hashlib.sha384(f"measurement {i}".encode()).digest() for i in range(1, count + 1)]


def spdm_report(
    key: ec.EllipticCurvePrivateKey,
    nonce: bytes,
    measurements: list[bytes],
    *,
    driver: str = DRIVER,
    vbios: bytes = VBIOS_FIELD,
) -> bytes:
    request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
    record = b""
    for i, value in enumerate(measurements, start=1):
        dmtf = bytes([0x01]) + len(value).to_bytes(2, "little") + value
        record += bytes([i, 0x01]) + len(dmtf).to_bytes(2, "little") + dmtf
    opaque = b""
    for field_type, data in ((3, driver.encode() + b"\x00"), (6, vbios)):
        opaque += field_type.to_bytes(2, "little") + len(data).to_bytes(2, "little") + data
    response = (
        bytes([0x11, 0x60, 0x00, 0x00, len(measurements)])
        + len(record).to_bytes(3, "little")
        + record
        + hashlib.sha256(b"response nonce").digest()
        + len(opaque).to_bytes(2, "little")
        + opaque
    )
    der = key.sign(request + response, ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return request + response + r.to_bytes(48, "big") + s.to_bytes(48, "big")


@dataclass
class FakeEvidenceSource:
    """Answers like NVIDIA's verifier over NVML would, for the GPUs given."""

    ca: FakeDeviceCa
    uuids: tuple[str, ...]
    measurements: list[bytes] = field(default_factory=measurement_values)
    vbios: str = VBIOS
    answer_nonce: bytes | None = None
    result: bool = True
    name: str = "nv-local-gpu-verifier"

    def collect(self, nonce: bytes) -> list[RawEvidence]:
        found = []
        for uuid in self.uuids:
            key, chain = self.ca.device()
            report = spdm_report(
                key, self.answer_nonce or nonce, self.measurements, vbios=vbios_field(self.vbios)
            )
            found.append(RawEvidence(uuid, report, chain))
        return found

    def verdict(self, nonce: bytes) -> bool:
        return self.result


@dataclass
class FakeRimSigner:
    """Signs RIMs the way NVIDIA's are signed (enveloped XMLDSig, C14N 1.1, ECDSA P-384)."""

    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.root = _cert("Test RIM Root", self.root_key, "Test RIM Root", self.root_key, ca=True)
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.leaf = _cert("Test RIM Signer", self.key, "Test RIM Root", self.root_key, ca=False)

    def sign(self, unsigned: str) -> bytes:
        digest = hashlib.sha384(canonicalize(parse_document(unsigned.encode(), "rim"))).digest()
        signed_info = (
            "<ds:SignedInfo>"
            f'<ds:CanonicalizationMethod Algorithm="{C14N11}"/>'
            f'<ds:SignatureMethod Algorithm="{ECDSA_SHA384}"/>'
            '<ds:Reference URI=""><ds:Transforms>'
            f'<ds:Transform Algorithm="{ENVELOPED}"/><ds:Transform Algorithm="{C14N11}"/>'
            f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA384}"/>'
            f"<ds:DigestValue>{base64.b64encode(digest).decode()}</ds:DigestValue>"
            "</ds:Reference></ds:SignedInfo>"
        )
        chain = "".join(
            "<ds:X509Certificate>"
            + base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            + "</ds:X509Certificate>"
            for c in (self.leaf, self.root)
        )

        def document(value: str) -> str:
            signature = (
                f'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">{signed_info}'
                f"<ds:SignatureValue>{value}</ds:SignatureValue>"
                f"<ds:KeyInfo><ds:X509Data>{chain}</ds:X509Data></ds:KeyInfo></ds:Signature>"
            )
            end = unsigned.rindex("</SoftwareIdentity>")
            return unsigned[:end] + signature + unsigned[end:]

        root = parse_document(document("").encode(), "rim")
        sig = root.elements()[-1]
        scope = {**root.declarations(), **sig.declarations()}
        der = self.key.sign(canonicalize(sig.elements()[0], scope), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        value = base64.b64encode(r.to_bytes(48, "big") + s.to_bytes(48, "big")).decode()
        return document(value).encode()


def rim_xml(values: list[bytes], signer: FakeRimSigner, version: str = VBIOS) -> bytes:
    """A VBIOS RIM in NVIDIA's SWID layout giving ``values`` as golden, signed."""
    resources = "".join(
        f'<ns0:Resource type="Measurement" index="{i}" active="True" alternatives="1" '
        f'ns2:Hash0="{v.hex()}" name="m{i}" size="48"/>'
        for i, v in enumerate(values, start=0)
    )
    return signer.sign(
        '<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" '
        'xmlns:ns0="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" '
        'xmlns:ns2="http://www.w3.org/2001/04/xmlenc#sha384" name="GH100" tagId="t" '
        f'version="1.0"><ns0:Meta colloquialVersion="{version}"/>'
        f"<ns0:Payload>{resources}</ns0:Payload></SoftwareIdentity>"
    )
