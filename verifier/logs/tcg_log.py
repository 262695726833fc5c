"""Parser of the TCG PC Client firmware event log (``binary_bios_measurements``).

Two on-disk formats exist (TCG PC Client Platform Firmware Profile, section 10):

* the crypto-agile log: a first TCG_PCClientPCREvent (SHA-1 layout) carrying the
  ``Spec ID Event03`` header (TCG_EfiSpecIDEvent) that lists the digest algorithms and
  their sizes, then TCG_PCR_EVENT2 records with one digest per algorithm;
* the SHA-1 log of TPM 1.2-era firmware (still written by e.g. the Windows GCP Shielded VM
  log in the test data): TCG_PCClientPCREvent records only, optionally headed by a
  ``Spec ID Event00`` event.

Decisions, so that callers can rely on them:

* ``Event.index`` is the record number in the file, the header counting as record 0 (as
  ``tpm2_eventlog`` numbers events); a SHA-1 log without header starts at 0.
* A log whose first record is EV_NO_ACTION but not a Spec ID event is rejected: the only
  EV_NO_ACTION allowed first is the header, so such a file (e.g. one holding just a
  ``StartupLocality`` event) has lost its header: it is truncated or not a firmware log.
* Trailing padding is accepted only when every byte after the last record is 0x00 or
  every byte is 0xFF (logs copied out of the ACPI log area or NV storage are padded to its
  size; sysfs gives the exact log). In a crypto-agile log neither can start a valid
  record (a record needs at least one digest; an all-ones record names PCR 0xFFFFFFFF with
  a type other than EV_NO_ACTION). In a SHA-1 log an all-zero record at the very end (an
  empty EV_PREBOOT_CERT with a zero digest) reads as padding. A log cut a few bytes after
  a record boundary can look padded too; the replay against the quoted PCRs still catches
  the missing events. Anything else after the last record is a FormatError.
* PCR indexes above 23 are refused, except 0xFFFFFFFF (-1) on EV_NO_ACTION events, which
  Windows appends to its logs and which are never extended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from ..errors import FormatError
from ..wire import Reader

HEADER_EVENT_TYPE = 0x00000003
"""EV_NO_ACTION, the header's type (named in tcg_events, which imports this module)."""

SPEC_ID_EVENT03 = b"Spec ID Event03\x00"
SPEC_ID_EVENT00 = b"Spec ID Event00\x00"

MAX_EVENT_SIZE = 16 * 1024 * 1024
"""Largest event data accepted; real events (certificates, GPT, images paths) are far smaller."""
MAX_PCR_INDEX = 23
"""PC Client TPMs have 24 PCRs; the firmware log only ever names those."""
NO_PCR = 0xFFFFFFFF
"""PCR index -1, which Windows gives to informational EV_NO_ACTION events."""

TPM_ALG_SHA1 = 0x0004
SHA1_SIZE = 20

KNOWN_DIGEST_SIZES: Mapping[int, int] = MappingProxyType(
    {
        0x0004: 20,  # SHA1
        0x000B: 32,  # SHA256
        0x000C: 48,  # SHA384
        0x000D: 64,  # SHA512
        0x0012: 32,  # SM3_256
        0x0027: 32,  # SHA3_256
        0x0028: 48,  # SHA3_384
        0x0029: 64,  # SHA3_512
    }
)
"""TPM_ALG_ID → digest size for every hash a PCR bank can use (TCG Algorithm Registry)."""


class LogFormat(Enum):
    CRYPTO_AGILE = "crypto-agile"
    SHA1 = "sha1"


@dataclass(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent (``Spec ID Event03``) or its SHA-1 log form (``Spec ID Event00``)."""

    signature: str
    platform_class: int
    spec_version_major: int
    spec_version_minor: int
    spec_errata: int
    uintn_size: int
    """1 = UINTN is 32 bits, 2 = 64 bits (as written by firmware)."""
    algorithms: tuple[tuple[int, int], ...]
    """(TPM_ALG_ID, digest size) in header order."""
    vendor_info: bytes


@dataclass(frozen=True)
class Event:
    """One measured event (TCG_PCR_EVENT2, or TCG_PCClientPCREvent in a SHA-1 log)."""

    index: int
    """Record number in the file; the header is record 0."""
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]
    """TPM_ALG_ID → digest as logged (the firmware's claim, to be checked)."""
    data: bytes
    offset: int
    """Byte offset of the record in the log, for messages."""


@dataclass(frozen=True)
class EventLog:
    spec: SpecIdEvent | None
    """The header event; None for a SHA-1 log written without one."""
    events: tuple[Event, ...]
    format: LogFormat

    @property
    def algorithms(self) -> tuple[int, ...]:
        """TPM_ALG_IDs of the banks this log records."""
        if self.spec is None:
            return (TPM_ALG_SHA1,)
        return tuple(alg for alg, _ in self.spec.algorithms)

    @property
    def uintn_bytes(self) -> int:
        """Size of UINTN in event structures; firmware with a SHA-1 log is taken as 64-bit."""
        if self.spec is not None and self.spec.uintn_size == 1:
            return 4
        return 8


def events_for_pcr(log: EventLog, pcr: int) -> tuple[Event, ...]:
    """The events of ``log`` that name ``pcr``, in log order (EV_NO_ACTION included)."""
    return tuple(event for event in log.events if event.pcr == pcr)


def parse_event_log(data: bytes) -> EventLog:
    """Parse a firmware event log; any malformation raises FormatError."""
    reader = Reader(data, endian="little", what="firmware event log")
    pad = _padding_start(data)
    if pad == 0:
        raise FormatError("firmware event log is empty (no bytes, or only padding)")
    first = _read_sha1_record(reader, index=0)
    if first.event_type != HEADER_EVENT_TYPE:
        events = [first, *_parse_sha1_records(reader, 1, pad)]
        return EventLog(None, tuple(events), LogFormat.SHA1)
    signature = first.data[:16]
    if signature in (SPEC_ID_EVENT03, SPEC_ID_EVENT00):
        _header_checks(first)
        spec = parse_spec_id_data(first.data)
        if signature == SPEC_ID_EVENT03:
            return EventLog(spec, _parse_agile_events(reader, spec, pad), LogFormat.CRYPTO_AGILE)
        return EventLog(spec, tuple(_parse_sha1_records(reader, 1, pad)), LogFormat.SHA1)
    shown = signature.split(b"\x00", 1)[0].decode("ascii", "replace")
    raise FormatError(
        f"firmware event log: first event is EV_NO_ACTION {shown!r}, not the Spec ID header: "
        "the log is truncated at its start or is not a TCG firmware log"
    )


def _header_checks(first: Event) -> None:
    if first.pcr != 0 or any(first.digests[TPM_ALG_SHA1]):
        raise FormatError(
            "firmware event log: Spec ID header must be in PCR 0 with a zero digest "
            f"(PCR {first.pcr}, digest {first.digests[TPM_ALG_SHA1].hex()})"
        )


def parse_spec_id_data(data: bytes) -> SpecIdEvent:
    """The data of a Spec ID event: TCG_EfiSpecIDEvent (Event03) or its SHA-1 form (Event00).

    Both share the header up to uintnSize; Event03 then lists its digest algorithms,
    Event00 implies SHA-1 alone.
    """
    signature = data[:16]
    if signature not in (SPEC_ID_EVENT03, SPEC_ID_EVENT00):
        raise FormatError(
            "Spec ID event: signature is neither 'Spec ID Event03' nor 'Spec ID Event00'"
        )
    name = signature.rstrip(b"\x00").decode()
    r = Reader(data, endian="little", what=name)
    r.skip(16, "signature")
    platform_class = r.u32("platformClass")
    minor = r.u8("specVersionMinor")
    major = r.u8("specVersionMajor")
    errata = r.u8("specErrata")
    uintn_size = r.u8("uintnSize")
    if signature == SPEC_ID_EVENT03:
        algorithms = _spec_id_algorithms(r, name)
    else:
        algorithms = ((TPM_ALG_SHA1, SHA1_SIZE),)
    vendor_info = r.sized(1, "vendorInfo")
    r.expect_end()
    if signature == SPEC_ID_EVENT03 and uintn_size not in (1, 2):
        raise FormatError(f"{name}: uintnSize {uintn_size}, expected 1 or 2")
    return SpecIdEvent(
        signature=name,
        platform_class=platform_class,
        spec_version_major=major,
        spec_version_minor=minor,
        spec_errata=errata,
        uintn_size=uintn_size,
        algorithms=algorithms,
        vendor_info=vendor_info,
    )


def _spec_id_algorithms(r: Reader, name: str) -> tuple[tuple[int, int], ...]:
    count = r.u32("numberOfAlgorithms")
    if not 1 <= count <= len(KNOWN_DIGEST_SIZES):
        raise FormatError(
            f"{name}: {count} digest algorithms, expected 1 to {len(KNOWN_DIGEST_SIZES)}"
        )
    algorithms: list[tuple[int, int]] = []
    for i in range(count):
        alg = r.u16(f"algorithm {i} id")
        size = r.u16(f"algorithm {i} digest size")
        if alg not in KNOWN_DIGEST_SIZES:
            raise FormatError(f"{name}: unknown digest algorithm 0x{alg:04x}")
        if KNOWN_DIGEST_SIZES[alg] != size:
            raise FormatError(
                f"{name}: algorithm 0x{alg:04x} has digest size {size}, "
                f"expected {KNOWN_DIGEST_SIZES[alg]}"
            )
        if any(alg == seen for seen, _ in algorithms):
            raise FormatError(f"{name}: algorithm 0x{alg:04x} listed twice")
        algorithms.append((alg, size))
    return tuple(algorithms)


def _padding_start(data: bytes) -> int:
    """Offset from which ``data`` holds only 0x00 or only 0xFF bytes (len(data) if neither)."""
    return min(len(data.rstrip(b"\x00")), len(data.rstrip(b"\xff")))


def _check_pcr(reader: Reader, pcr: int, event_type: int, index: int, offset: int) -> None:
    # Windows appends informational EV_NO_ACTION events with PCR index -1 (0xFFFFFFFF,
    # e.g. the "Windows AIK" event of the option_rom test log); they are never extended.
    if pcr > MAX_PCR_INDEX and not (event_type == HEADER_EVENT_TYPE and pcr == NO_PCR):
        raise FormatError(
            f"{reader.what}: event {index} at offset {offset} names PCR {pcr}, "
            f"beyond the last PCR {MAX_PCR_INDEX}"
        )


def _read_sha1_record(reader: Reader, index: int) -> Event:
    offset = reader.offset
    pcr = reader.u32(f"event {index} pcrIndex")
    event_type = reader.u32(f"event {index} eventType")
    _check_pcr(reader, pcr, event_type, index, offset)
    digest = reader.take(SHA1_SIZE, f"event {index} digest")
    data = reader.sized(4, f"event {index} event data", limit=MAX_EVENT_SIZE)
    return Event(index, pcr, event_type, MappingProxyType({TPM_ALG_SHA1: digest}), data, offset)


def _parse_sha1_records(reader: Reader, first_index: int, pad: int) -> list[Event]:
    events: list[Event] = []
    while reader.offset < pad:
        events.append(_read_sha1_record(reader, first_index + len(events)))
    return events


def _parse_agile_events(reader: Reader, spec: SpecIdEvent, pad: int) -> tuple[Event, ...]:
    sizes = dict(spec.algorithms)
    events: list[Event] = []
    index = 1
    while reader.offset < pad:
        offset = reader.offset
        pcr = reader.u32(f"event {index} pcrIndex")
        event_type = reader.u32(f"event {index} eventType")
        _check_pcr(reader, pcr, event_type, index, offset)
        count = reader.u32(f"event {index} digest count")
        if not 1 <= count <= len(sizes):
            raise FormatError(
                f"firmware event log: event {index} at offset {offset} has {count} digests, "
                f"expected 1 to {len(sizes)} (the banks in the Spec ID header)"
            )
        digests: dict[int, bytes] = {}
        for _ in range(count):
            alg = reader.u16(f"event {index} digest algorithm")
            if alg not in sizes:
                raise FormatError(
                    f"firmware event log: event {index} at offset {offset} has a digest of "
                    f"algorithm 0x{alg:04x}, not listed in the Spec ID header"
                )
            if alg in digests:
                raise FormatError(
                    f"firmware event log: event {index} at offset {offset} has two "
                    f"digests of algorithm 0x{alg:04x}"
                )
            digests[alg] = reader.take(sizes[alg], f"event {index} digest 0x{alg:04x}")
        data = reader.sized(4, f"event {index} event data", limit=MAX_EVENT_SIZE)
        events.append(Event(index, pcr, event_type, MappingProxyType(digests), data, offset))
        index += 1
    return tuple(events)
