"""NVIDIA GPU attestation reports: an SPDM 1.1 GET_MEASUREMENTS request and its response.

The report NVML returns (``nvmlDeviceGetConfComputeGpuAttestationReport``) is the
37-byte request the driver sent followed by the GPU's MEASUREMENTS response, which ends
in an ECDSA P-384 signature over request and response (DMTF DSP0274 1.1, as NVIDIA's
local GPU verifier reads it). Pure functions over bytes with bounds checks: every
length field is checked against the bytes that remain, and nothing may trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError

REQUEST_LENGTH = 37
SIGNATURE_LENGTH = 96  # ECDSA P-384: r || s, 48 bytes each
NONCE_LENGTH = 32
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
DMTF_MEASUREMENT_SPEC = 0x01
MAX_REPORT = 64 * 1024

OPAQUE_DRIVER_VERSION = 3
OPAQUE_VBIOS_VERSION = 6
OPAQUE_PROJECT = 17
OPAQUE_PROJECT_SKU = 18
OPAQUE_CHIP_SKU = 15


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block: its index, value type and value (a digest)."""

    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class OpaqueField:
    field_type: int
    data: bytes


@dataclass(frozen=True)
class AttestationReport:
    spdm_version: int
    request_nonce: bytes
    response_nonce: bytes
    measurements: tuple[MeasurementBlock, ...]
    opaque: tuple[OpaqueField, ...]
    signed: bytes
    """Request and response up to the signature: what the signature covers."""
    signature: bytes

    def opaque_text(self, field_type: int) -> str:
        """An opaque field holding NUL-terminated ASCII (driver version, VBIOS, ...)."""
        for f in self.opaque:
            if f.field_type == field_type:
                return f.data.split(b"\x00", 1)[0].decode("ascii", "replace")
        return ""

    def opaque_bytes(self, field_type: int) -> bytes:
        for f in self.opaque:
            if f.field_type == field_type:
                return f.data
        return b""


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self._data = data
        self._pos = 0
        self._where = where

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise FormatError(
                f"{self._where}: {what} needs {n} bytes at offset {self._pos}, "
                f"{self.remaining} remain (truncated report?)"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "little")


def parse_attestation_report(report: bytes) -> AttestationReport:
    """Split and parse a GPU attestation report; raise FormatError on any malformation."""
    if len(report) > MAX_REPORT:
        raise FormatError(f"GPU attestation report: larger than {MAX_REPORT} bytes")
    req = _Reader(report[:REQUEST_LENGTH], "GPU attestation request")
    version = req.uint(1, "SPDM version")
    if req.uint(1, "request code") != GET_MEASUREMENTS:
        raise FormatError("GPU attestation report: does not start with a GET_MEASUREMENTS request")
    req.take(2, "request parameters")
    request_nonce = req.take(NONCE_LENGTH, "request nonce")
    req.take(1, "slot ID")
    resp = _Reader(report[REQUEST_LENGTH:], "GPU attestation response")
    if resp.uint(1, "SPDM version") != version:
        raise FormatError("GPU attestation report: request and response SPDM versions differ")
    if resp.uint(1, "response code") != MEASUREMENTS:
        raise FormatError("GPU attestation report: the response is not MEASUREMENTS")
    resp.take(2, "response parameters")
    blocks = resp.uint(1, "number of blocks")
    record = resp.take(resp.uint(3, "measurement record length"), "measurement record")
    response_nonce = resp.take(NONCE_LENGTH, "response nonce")
    opaque = resp.take(resp.uint(2, "opaque data length"), "opaque data")
    signature = resp.take(SIGNATURE_LENGTH, "signature")
    if resp.remaining:
        raise FormatError(f"GPU attestation report: {resp.remaining} bytes after the signature")
    return AttestationReport(
        spdm_version=version,
        request_nonce=request_nonce,
        response_nonce=response_nonce,
        measurements=parse_measurement_record(record, blocks),
        opaque=parse_opaque_data(opaque),
        signed=report[: len(report) - SIGNATURE_LENGTH],
        signature=signature,
    )


def parse_measurement_record(record: bytes, blocks: int) -> tuple[MeasurementBlock, ...]:
    r = _Reader(record, "GPU measurement record")
    found: list[MeasurementBlock] = []
    for _ in range(blocks):
        index = r.uint(1, "block index")
        if r.uint(1, "measurement specification") != DMTF_MEASUREMENT_SPEC:
            raise FormatError(f"GPU measurement block {index} is not a DMTF measurement")
        body = _Reader(r.take(r.uint(2, "block size"), "block"), f"GPU measurement {index}")
        value_type = body.uint(1, "value type")
        value = body.take(body.uint(2, "value size"), "value")
        if body.remaining:
            raise FormatError(f"GPU measurement block {index}: size disagrees with its value")
        if any(b.index == index for b in found) or index == 0:
            raise FormatError(f"GPU measurement record: block index {index} repeats or is 0")
        found.append(MeasurementBlock(index, value_type, value))
    if r.remaining:
        raise FormatError(f"GPU measurement record: {r.remaining} bytes after {blocks} blocks")
    if not found:
        raise FormatError("GPU measurement record: no measurement block")
    return tuple(found)


def parse_opaque_data(data: bytes) -> tuple[OpaqueField, ...]:
    r = _Reader(data, "GPU opaque data")
    fields: list[OpaqueField] = []
    while r.remaining:
        field_type = r.uint(2, "field type")
        fields.append(OpaqueField(field_type, r.take(r.uint(2, "field size"), "field")))
    return tuple(fields)
