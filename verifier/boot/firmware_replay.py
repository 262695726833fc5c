"""Replay of the firmware event log and recomputation of the digests its data determines.

A firmware log is a list of claims: "PCR n was extended with digest d, and d is the hash
of this data". The TPM only vouches for the PCR values, so two checks are needed:
:func:`verify_against_pcrs` (the digests replay to the quoted PCRs) and
:func:`check_event_digests` (wherever the data alone determines the digest, the digest is
that hash, so the description a report shows is the thing measured).

Which event types are data-determined, and how (each rule checked on every log in the
project's test data: OVMF 2025.02, GCE edk2 firmware, Hyper-V-like and Windows logs):

* EV_SEPARATOR, EV_EFI_ACTION, EV_ACTION, EV_S_CRTM_VERSION,
  EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT2, EV_EFI_GPT_EVENT(2),
  EV_OMIT_BOOT_DEVICE_EVENTS: digest = H(event data) (PFP 1.05 section 10.4.1; edk2
  SecurityPkg Tcg2Dxe MeasureVariable hashes the whole UEFI_VARIABLE_DATA for
  DRIVER_CONFIG).
* EV_EFI_VARIABLE_BOOT: H(VariableData) or H(whole UEFI_VARIABLE_DATA). edk2's
  MeasureVariable hashes only VarData for every type but DRIVER_CONFIG, and so do the OVMF,
  GCE, ebs_event_missing and option_rom logs (52 boot events); the crypto_agile log's firmware
  hashes the whole structure (7 events). BOOT2 was introduced to end that ambiguity. With
  the first form the variable's name and GUID are not covered by the digest.
* EV_EFI_VARIABLE_AUTHORITY: H(whole UEFI_VARIABLE_DATA); shim versions before rhboot/shim
  commit 8a27a48 log one byte more than they hash, so when the event data runs past the
  declared structure, H(data without its last byte) is accepted too.
* EV_IPL in PCR 8 written by GRUB ("grub_cmd: …", "kernel_cmdline: …",
  "module_cmdline: …", NUL-terminated): digest = H(text after the prefix, without NUL)
  (GRUB 2.06 grub-core/commands/tpm.c measures the string and logs it with a prefix).
* Not data-determined, left to PCR prediction or profiles: images (Authenticode),
  firmware blobs and handoff tables (hash of memory), EV_POST_CODE, EV_EVENT_TAG (the Linux
  EFI stub logs a label and hashes the command line or initrd), other EV_IPL (systemd-stub
  logs the section name and hashes first the name+NUL in ASCII, then the section), and
  EV_NO_ACTION, which is never extended.

Every bank the log records is checked, except banks of algorithms :mod:`pcr` cannot
compute (SM3, SHA-3): :func:`replay` refuses those, so their digests never reach a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import FirmwareLogError, FormatError
from ..logs.tcg_events import (
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EFI_GPT_EVENT,
    EV_EFI_GPT_EVENT2,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_NO_ACTION,
    EV_OMIT_BOOT_DEVICE_EVENTS,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    STARTUP_LOCALITY_SIGNATURE,
    StartupLocality,
    decode_no_action,
    decode_variable,
    event_type_name,
)
from ..logs.tcg_log import MAX_PCR_INDEX, Event, EventLog
from ..tpm.pcr import ALGORITHMS_BY_ID, HashAlgorithm, extend

WHOLE_DATA_TYPES = frozenset(
    {
        EV_SEPARATOR,
        EV_EFI_ACTION,
        EV_ACTION,
        EV_S_CRTM_VERSION,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        EV_EFI_VARIABLE_BOOT2,
        EV_EFI_GPT_EVENT,
        EV_EFI_GPT_EVENT2,
        EV_OMIT_BOOT_DEVICE_EVENTS,
    }
)
"""Event types whose digest is the hash of the event data itself."""

GRUB_PCR = 8
GRUB_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"module_cmdline: ")

DYNAMIC_PCRS = range(17, 23)
"""PCRs 17 to 22 start as all ones at TPM start-up (PC Client PTP); the others as zeros."""


def initial_value(alg: HashAlgorithm, pcr: int) -> bytes:
    """A PCR's value before any extend (StartupLocality aside)."""
    return b"\xff" * alg.digest_size if pcr in DYNAMIC_PCRS else alg.zero()


def _grub_text(event: Event) -> bytes | None:
    if event.event_type != EV_IPL or event.pcr != GRUB_PCR:
        return None
    for prefix in GRUB_PREFIXES:
        if event.data.startswith(prefix):
            text = event.data[len(prefix) :]
            return text[:-1] if text.endswith(b"\x00") else text
    return None


def _digest_forms(event: Event) -> tuple[Callable[[HashAlgorithm], bytes], ...] | None:
    """The ways the digest may be computed from the data, or None when it is not determined."""
    data = event.data
    if event.event_type in WHOLE_DATA_TYPES:
        return (lambda alg: alg.hash(data),)
    if event.event_type == EV_EFI_VARIABLE_BOOT:
        value = decode_variable(data).data
        return (lambda alg: alg.hash(data), lambda alg: alg.hash(value))
    if event.event_type == EV_EFI_VARIABLE_AUTHORITY:
        if decode_variable(data).trailing:
            return (lambda alg: alg.hash(data), lambda alg: alg.hash(data[:-1]))
        return (lambda alg: alg.hash(data),)
    grub = _grub_text(event)
    if grub is not None:
        return (lambda alg: alg.hash(grub),)
    return None


def is_data_determined(event: Event) -> bool:
    """Whether :func:`check_event_digests` binds this event's data to its digests.

    Reports can use it to mark descriptions that are only the firmware's word.
    """
    try:
        return _digest_forms(event) is not None
    except FormatError:
        return False


def check_event_digests(log: EventLog) -> None:
    """Raise FirmwareLogError at the first event whose data does not hash to its digests.

    All banks of one event must match the same form of the rule (firmware computes the
    digests of one event from one buffer). A data-determined event whose data is
    malformed raises FirmwareLogError as well.
    """
    for event in log.events:
        where = f"event {event.index} ({event_type_name(event.event_type)}, PCR {event.pcr})"
        try:
            forms = _digest_forms(event)
        except FormatError as error:
            raise FirmwareLogError(f"{where}: malformed data: {error.message}") from None
        if forms is None:
            continue
        matching = set(range(len(forms)))
        for alg_id, logged in sorted(event.digests.items()):
            alg = ALGORITHMS_BY_ID.get(alg_id)
            if alg is None:
                continue
            expected = [form(alg) for form in forms]
            matching &= {i for i, digest in enumerate(expected) if digest == logged}
            if not matching:
                raise FirmwareLogError(
                    f"{where}: {alg.name} digest {logged.hex()} does not match the event data "
                    f"(expected {' or '.join(d.hex() for d in expected)})"
                )


def data_digest(event: Event, alg: HashAlgorithm) -> bytes | None:
    """The digest ``event``'s data has in bank ``alg``, by the rule its logged digests
    follow: what a firmware that measured the same data extends into that bank.

    None when the data does not determine the digest (e.g. a firmware blob). Raises
    FirmwareLogError when no logged digest follows any rule for the data.
    """
    forms = _digest_forms(event)
    if forms is None:
        return None
    for alg_id, logged in sorted(event.digests.items()):
        known = ALGORITHMS_BY_ID.get(alg_id)
        if known is None:
            continue
        for form in forms:
            if form(known) == logged:
                return form(alg)
    raise FirmwareLogError(
        f"event {event.index} ({event_type_name(event.event_type)}, PCR {event.pcr}): "
        "no logged digest matches its data"
    )


def replay(log: EventLog, alg: HashAlgorithm) -> dict[int, bytes]:
    """PCR values the log's ``alg`` bank extends to, for every PCR it touches.

    EV_NO_ACTION events are not extended; a StartupLocality event (PFP 10.4.5.3) sets
    PCR 0's starting value to zeros ending in the locality byte.
    """
    if alg.tpm_id not in log.algorithms:
        raise FirmwareLogError(f"the firmware log has no {alg.name} bank")
    values: dict[int, bytes] = {}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            _apply_no_action(event, alg, values)
            continue
        digest = event.digests.get(alg.tpm_id)
        if digest is None:
            raise FirmwareLogError(
                f"event {event.index} ({event_type_name(event.event_type)}, PCR {event.pcr}) "
                f"has no {alg.name} digest"
            )
        values[event.pcr] = extend(
            alg, values.get(event.pcr, initial_value(alg, event.pcr)), digest
        )
    return values


def _apply_no_action(event: Event, alg: HashAlgorithm, values: dict[int, bytes]) -> None:
    if not event.data.startswith(STARTUP_LOCALITY_SIGNATURE):
        return
    content = decode_no_action(event.data)
    if not isinstance(content, StartupLocality):
        raise FormatError(f"event {event.index}: malformed StartupLocality event")
    if event.pcr != 0:
        raise FirmwareLogError(f"event {event.index}: StartupLocality event names PCR {event.pcr}")
    if 0 in values:
        raise FirmwareLogError(
            f"event {event.index}: StartupLocality event after PCR 0 was set or extended"
        )
    values[0] = alg.zero()[:-1] + bytes([content.locality])


def verify_against_pcrs(
    log: EventLog,
    alg: HashAlgorithm,
    pcr_values: Mapping[int, bytes],
    pcrs: Iterable[int],
    *,
    unlogged: Mapping[int, Sequence[bytes]] | None = None,
) -> None:
    """Raise FirmwareLogError at the first PCR of ``pcrs`` the log does not replay to.

    ``pcr_values`` holds the quoted values of the ``alg`` bank. A PCR without events must
    hold its initial value. ``unlogged`` holds, per PCR, the digests the OS extends after
    the firmware log's events and logs elsewhere (systemd-pcrphase's boot phases in
    PCR 11): they are extended after the replay. This checks the replay only; call
    :func:`check_event_digests` (or :func:`verify_firmware_log`) to also bind the data.
    """
    replayed = replay(log, alg)
    for pcr in pcrs:
        if not 0 <= pcr <= MAX_PCR_INDEX:
            raise FirmwareLogError(f"PCR {pcr} does not exist (0 to {MAX_PCR_INDEX})")
        quoted = pcr_values.get(pcr)
        if quoted is None:
            raise FirmwareLogError(f"PCR {pcr} has no quoted {alg.name} value to compare with")
        if len(quoted) != alg.digest_size:
            raise FirmwareLogError(
                f"PCR {pcr}: quoted {alg.name} value has {len(quoted)} bytes, "
                f"expected {alg.digest_size}"
            )
        value = replayed.get(pcr, initial_value(alg, pcr))
        later = (unlogged or {}).get(pcr, ())
        for digest in later:
            value = extend(alg, value, digest)
        if value != quoted:
            then = f" then {len(later)} unlogged extends" if later else ""
            raise FirmwareLogError(
                f"PCR {pcr} ({alg.name}): the firmware log{then} replays to {value.hex()}, "
                f"the quoted value is {quoted.hex()}"
            )


def verify_firmware_log(
    log: EventLog, alg: HashAlgorithm, pcr_values: Mapping[int, bytes], pcrs: Iterable[int]
) -> None:
    """Both checks: every data-determined digest is honest, and the log replays to the PCRs."""
    check_event_digests(log)
    verify_against_pcrs(log, alg, pcr_values, pcrs)
