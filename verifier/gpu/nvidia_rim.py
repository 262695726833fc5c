"""NVIDIA reference integrity manifests (RIM): the golden GPU measurements.

A RIM is a signed ISO/IEC 19770-2 SWID tag (TCG RIM information model). Each
``Payload/Resource`` of type ``Measurement`` names an ``index`` (0-based: SPDM
measurement block ``index + 1``), whether it is ``active``, and ``alternatives``
accepted digests ``Hash0``..``HashN`` in the SHA-384 namespace. Its XML signature is
checked by :mod:`.rim_signature` (both parsers are expat, over the same bytes); the
signer's chain is kept for the check against NVIDIA's RIM root at attestation time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cryptography import x509

from ..errors import FormatError
from .rim_signature import verify_rim_signature

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
MAX_RIM_BYTES = 4 * 1024 * 1024
MAX_ALTERNATIVES = 16


@dataclass(frozen=True)
class GoldenMeasurement:
    index: int
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class Rim:
    name: str
    version: str
    measurements: tuple[GoldenMeasurement, ...]
    signers: tuple[x509.Certificate, ...]
    """The signer's certificate chain from the RIM's KeyInfo, leaf first (untrusted)."""


def parse_rim(data: bytes, name: str) -> Rim:
    """Check one RIM file's XML signature and read its active golden measurements."""
    if len(data) > MAX_RIM_BYTES:
        raise FormatError(f"RIM {name}: larger than {MAX_RIM_BYTES} bytes")
    # No DTD, no entities: a RIM needs neither, and refusing them bounds expansion.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise FormatError(f"RIM {name}: a document type declaration is not allowed")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise FormatError(f"RIM {name}: not well-formed XML ({exc})") from None
    if root.tag != f"{{{SWID_NS}}}SoftwareIdentity":
        raise FormatError(f"RIM {name}: not a SWID tag (root is {root.tag})")
    meta = root.find(f"{{{SWID_NS}}}Meta")
    payload = root.find(f"{{{SWID_NS}}}Payload")
    if meta is None or payload is None:
        raise FormatError(f"RIM {name}: no Meta or Payload element")
    golden: list[GoldenMeasurement] = []
    for res in payload.findall(f"{{{SWID_NS}}}Resource"):
        if res.get("type") != "Measurement":
            continue
        index = _int(res.get("index"), f"RIM {name}: Resource index")
        active = res.get("active")
        if active not in ("True", "False"):
            raise FormatError(f"RIM {name}: measurement {index} active must be True or False")
        count = _int(res.get("alternatives"), f"RIM {name}: measurement {index} alternatives")
        if not 1 <= count <= MAX_ALTERNATIVES:
            raise FormatError(f"RIM {name}: measurement {index} has {count} alternatives")
        if any(g.index == index for g in golden):
            raise FormatError(f"RIM {name}: measurement index {index} repeats")
        if active == "False":
            continue
        values = tuple(
            _digest(res.get(f"{{{SHA384_NS}}}Hash{i}"), f"RIM {name}: measurement {index}")
            for i in range(count)
        )
        golden.append(GoldenMeasurement(index, values))
    if not golden:
        raise FormatError(f"RIM {name}: no active measurement")
    signers = verify_rim_signature(data, name)
    return Rim(name, meta.get("colloquialVersion", ""), tuple(golden), signers)


def _int(value: str | None, where: str) -> int:
    if value is None or not value.isdigit() or len(value) > 4:
        raise FormatError(f"{where} must be a small decimal number")
    return int(value)


def _digest(value: str | None, where: str) -> bytes:
    if value is None or len(value) != 96:
        raise FormatError(f"{where}: each alternative must be a SHA-384 digest in hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{where}: a digest is not hex") from None
