"""What systemd-stub does with the sections of a UKI, version by version.

Each rule below was read in the systemd source of the supported versions (Debian's
systemd 252.39 for bookworm, 254.26 for bookworm-backports and 257.13 for trixie):
src/boot/{efi/,}stub.c, pe.c, util.c, efi-string.c, cpio.c, linux.c, secure-boot.c and
src/fundamental/{tpm-pcr,uki}.c. A stub version whose source
was not checked is refused rather than guessed: the predicted PCRs would be wrong
silently.

Assumptions of every prediction (true for a UKI booted directly as the removable-media
boot file of an ESP the image builder wrote): the firmware passes no load options (so
the stub uses ``.cmdline``, whatever the Secure Boot state), there are no credentials,
sysext/confext images or add-ons on the ESP, no SMBIOS command-line extension, and the
default profile (0) is booted. Section contents are read from the image as the firmware
loader lays it out in memory (:mod:`.pe_loader`), as the stub reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FormatError
from .pe import PeFile, Section, parse_pe
from .pe_loader import LoadedImage

X86_64_MACHINE = 0x8664
_SDMAGIC = re.compile(rb"#### LoaderInfo: systemd-stub ([\x21-\x7e]+) ####")


def stub_version(pe: PeFile, data: bytes) -> str:
    """The systemd-stub version string from the ``.sdmagic`` section."""
    magic = [s for s in pe.sections if s.name == b".sdmagic"]
    if len(magic) != 1:
        raise FormatError(
            f"UKI has {len(magic)} .sdmagic sections; expected one naming the systemd-stub version"
        )
    found = _SDMAGIC.search(LoadedImage(pe, data).section(magic[0]))
    if found is None:
        raise FormatError("UKI .sdmagic section does not name a systemd-stub version")
    return found.group(1).decode("ascii")


def stub_major(version: str) -> int:
    found = re.match(r"(\d+)", version)
    if found is None:
        raise FormatError(f"systemd-stub version {version!r} does not start with a number")
    return int(found.group(1))


# --- command line -----------------------------------------------------------------------


def _utf8_to_ucs2(raw: bytes) -> str:
    """efi-string.c xstrn8_to_16 (identical in 252 and 257): decode UTF-8 up to the first
    NUL, dropping invalid or truncated sequences and code points outside the BMP or in the
    surrogate range. Overlong forms are accepted, as in the C code."""
    out: list[str] = []
    i, n = 0, len(raw)
    while n > 0 and raw[i] != 0:
        first = raw[i]
        if first & 0x80 == 0:
            length, value = 1, first
        elif first & 0xE0 == 0xC0:
            length, value = 2, first & 0x1F
        elif first & 0xF0 == 0xE0:
            length, value = 3, first & 0x0F
        elif first & 0xF8 == 0xF0:
            length, value = 4, first & 0x07
        elif first & 0xFC == 0xF8:
            length, value = 5, first & 0x03
        elif first & 0xFE == 0xFC:
            length, value = 6, first & 0x01
        else:
            length, value = 1, -1
        if length > 1:
            if length > n:
                value = -1
            else:
                for k in range(1, length):
                    byte = raw[i + k]
                    if byte & 0xC0 != 0x80:
                        value = -1
                        break
                    value = (value << 6) | (byte & 0x3F)
        i += length
        n = max(n - length, 0)
        if 0 <= value <= 0xD7FF or 0xE000 <= value <= 0xFFFF:
            out.append(chr(value))
    return "".join(out)


def _mangle_cmdline_252(cmdline: str) -> str:
    """252 and 254 util.c mangle_stub_cmdline: control characters (<= 0x1F) become spaces, then
    trailing spaces are chopped."""
    return "".join(" " if ord(c) <= 0x1F else c for c in cmdline).rstrip(" ")


def _mangle_cmdline_257(cmdline: str) -> str:
    """257 util.c mangle_stub_cmdline: leading whitespace (<= 0x20 or 0x7F) dropped, inner
    whitespace characters each become one space, trailing whitespace chopped."""
    chars = [" " if ord(c) <= 0x20 or ord(c) == 0x7F else c for c in cmdline]
    return "".join(chars).strip(" ")


# --- cpio archives the stub generates from sections (cpio.c pack_cpio_literal) ------------


def _cpio_header(inode: int, mode: int, size: int, name_size: int) -> bytes:
    fields = (inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, name_size, 0)
    return b"070701" + b"".join(b"%08x" % f for f in fields)


def _pad4(buf: bytearray) -> None:
    buf.extend(bytes(-len(buf) % 4))


_CPIO_TRAILER = (
    b"070701"
    + b"00000000" * 4
    + b"00000001"
    + b"00000000" * 6
    + b"0000000B"
    + b"00000000"
    + b"TRAILER!!!\0\0\0\0"
)


def _cpio_archive(contents: bytes, directory: str, filename: str) -> bytes:
    """The newc cpio archive systemd-stub builds for one embedded section (cpio.c
    pack_cpio_literal, identical in 252 and 257): the directory (mode 0555), the file
    (mode 0444), inodes counted from 1, mtime 0, each record padded to 4 bytes, and the
    trailer."""
    buf = bytearray()
    dir_name = directory.encode("ascii") + b"\0"
    buf += _cpio_header(1, 0o040000 | 0o555, 0, len(dir_name)) + dir_name
    _pad4(buf)
    path = f"{directory}/{filename}".encode("ascii") + b"\0"
    buf += _cpio_header(2, 0o100000 | 0o444, len(contents), len(path)) + path
    _pad4(buf)
    buf += contents
    _pad4(buf)
    buf += _CPIO_TRAILER
    return bytes(buf)


# --- per-version rules --------------------------------------------------------------------


@dataclass(frozen=True)
class StubBoot:
    """What a given stub does on a direct boot of one UKI."""

    sections: dict[str, bytes]
    """Loaded contents of each unified section the stub found (VirtualSize > 0)."""
    measured_sections: tuple[str, ...]
    """Sections measured into PCR 11, in measurement order."""
    cmdline: str
    """The command line handed to the kernel as LoadOptions."""
    initrd: bytes
    """The initrd handed to the kernel (measured by the kernel into PCR 9)."""


@dataclass(frozen=True)
class _StubRules:
    major: int
    unified_sections: tuple[str, ...]
    locate: Callable[[LoadedImage, tuple[str, ...]], dict[str, bytes]]
    mangle_cmdline: Callable[[str], str]
    assemble_initrd: Callable[[dict[str, bytes]], bytes]


def _locate_252(image: LoadedImage, names: tuple[str, ...]) -> dict[str, bytes]:
    """252 and 254 pe.c locate_sections: a section header matches a name when its first
    strlen(name) bytes equal the name (a prefix match), and the LAST match wins."""
    found: dict[str, Section] = {}
    for section in image.pe.sections:
        for name in names:
            if section.name.startswith(name.encode("ascii")):
                found[name] = section
    return {name: image.section(s) for name, s in found.items() if s.virtual_size != 0}


def _locate_257(image: LoadedImage, names: tuple[str, ...]) -> dict[str, bytes]:
    """257 pe.c pe_locate_profile_sections for the default boot: exact names (up to 8
    bytes), first match wins, among the sections before the first ``.profile``; then the
    sections of profile 0 (from the first ``.profile`` to the next one) override them.
    A section with VirtualSize 0 counts as absent, also when it overrides."""
    pe = image.pe
    if any(s.name == b".dtbauto" for s in pe.sections):
        raise FormatError(
            "UKI has .dtbauto sections: the stub picks one by the machine's hardware IDs, "
            "which cannot be predicted offline"
        )
    profile_starts = [i for i, s in enumerate(pe.sections) if s.name == b".profile"]
    base_end = profile_starts[0] if profile_starts else len(pe.sections)
    ranges = [pe.sections[:base_end]]
    if profile_starts:
        profile_end = profile_starts[1] if len(profile_starts) > 1 else len(pe.sections)
        ranges.append(pe.sections[profile_starts[0] : profile_end])
    chosen: dict[str, Section] = {}
    for table in ranges:
        for name in names:
            match = next((s for s in table if s.name == name.encode("ascii")), None)
            if match is not None:
                chosen[name] = match
    return {name: image.section(s) for name, s in chosen.items() if s.virtual_size != 0}


def _initrd_252(sections: dict[str, bytes]) -> bytes:
    """252 and 254 stub.c: the .initrd section, then (only if any exist) generated cpios appended
    after padding it to 4 bytes: credentials, global credentials, sysexts (none on our ESP),
    .pcrsig and .pcrpkey as /.extra/ files."""
    extras = [
        _cpio_archive(sections[name], ".extra", filename)
        for name, filename in (
            (".pcrsig", "tpm2-pcr-signature.json"),
            (".pcrpkey", "tpm2-pcr-public-key.pem"),
        )
        if name in sections
    ]
    base = sections.get(".initrd", b"")
    if not extras:
        return base
    return base + bytes(-len(base) % 4) + b"".join(extras)


def _initrd_257(sections: dict[str, bytes]) -> bytes:
    """257 stub.c: in order .ucode, .initrd, [credentials, global credentials, sysext,
    confext: none on our ESP], then cpios of .pcrsig, .pcrpkey, .osrel (/.extra/os-release)
    and .profile; empty parts skipped; more than one part → each padded to 4 bytes and
    concatenated (combine_initrds), exactly one → passed as is."""
    parts = [sections.get(".ucode", b""), sections.get(".initrd", b"")]
    for name, filename in (
        (".pcrsig", "tpm2-pcr-signature.json"),
        (".pcrpkey", "tpm2-pcr-public-key.pem"),
        (".osrel", "os-release"),
        (".profile", "profile"),
    ):
        if name in sections:
            parts.append(_cpio_archive(sections[name], ".extra", filename))
    parts = [p for p in parts if p]
    if len(parts) == 1:
        return parts[0]
    return b"".join(p + bytes(-len(p) % 4) for p in parts)


_RULES = {
    252: _StubRules(
        major=252,
        # src/fundamental/tpm-pcr.c unified_sections in v252.
        unified_sections=(
            ".linux",
            ".osrel",
            ".cmdline",
            ".initrd",
            ".splash",
            ".dtb",
            ".pcrsig",
            ".pcrpkey",
        ),
        locate=_locate_252,
        mangle_cmdline=_mangle_cmdline_252,
        assemble_initrd=_initrd_252,
    ),
    # 254 behaves as 252 (same pe.c lookup, util.c clean-up, combine_initrd), but its
    # unified_sections (src/fundamental/tpm-pcr.c) adds .uname and .sbat.
    254: _StubRules(
        major=254,
        unified_sections=(
            ".linux",
            ".osrel",
            ".cmdline",
            ".initrd",
            ".splash",
            ".dtb",
            ".uname",
            ".sbat",
            ".pcrsig",
            ".pcrpkey",
        ),
        locate=_locate_252,
        mangle_cmdline=_mangle_cmdline_252,
        assemble_initrd=_initrd_252,
    ),
    257: _StubRules(
        major=257,
        # src/fundamental/uki.c unified_sections in v257.
        unified_sections=(
            ".linux",
            ".osrel",
            ".cmdline",
            ".initrd",
            ".ucode",
            ".splash",
            ".dtb",
            ".uname",
            ".sbat",
            ".pcrsig",
            ".pcrpkey",
            ".profile",
            ".dtbauto",
            ".hwids",
        ),
        locate=_locate_257,
        mangle_cmdline=_mangle_cmdline_257,
        assemble_initrd=_initrd_257,
    ),
}

SUPPORTED_MAJORS = tuple(sorted(_RULES))


def _check_kernel(kernel: bytes) -> None:
    """pe.c pe_kernel_info (252, 254 and 257): only an x86-64 kernel PE with MajorImageVersion
    >= 1 is started with LoadImage and given its initrd through the LINUX_INITRD_MEDIA
    device path (which the kernel measures into PCR 9); older kernels get the legacy EFI
    handover, whose measurements we do not predict."""
    pe = parse_pe(kernel)
    if pe.machine != X86_64_MACHINE:
        raise FormatError(f"UKI .linux kernel machine type 0x{pe.machine:04x} is not x86-64")
    if pe.major_image_version < 1:
        raise FormatError(
            "UKI .linux kernel is too old for the LoadImage boot path (MajorImageVersion 0); "
            "its boot measurements are not predicted"
        )


def simulate_stub(pe: PeFile, data: bytes, version: str) -> StubBoot:
    """What systemd-stub ``version`` measures and hands to the kernel for this UKI."""
    rules = _RULES.get(stub_major(version))
    if rules is None:
        raise FormatError(
            f"systemd-stub {version} is not supported for PCR prediction; supported: "
            + ", ".join(str(m) for m in SUPPORTED_MAJORS)
        )
    if pe.machine != X86_64_MACHINE:
        raise FormatError(f"UKI machine type 0x{pe.machine:04x} is not x86-64")
    sections = rules.locate(LoadedImage(pe, data), rules.unified_sections)
    if ".linux" not in sections:
        raise FormatError("UKI has no .linux section: systemd-stub refuses to boot it")
    _check_kernel(sections[".linux"])
    # unified_section_measure(): every unified section except .pcrsig, in table order.
    measured = tuple(n for n in rules.unified_sections if n in sections and n != ".pcrsig")
    if ".cmdline" not in sections:
        raise FormatError("UKI has no .cmdline section: the kernel command line is not fixed")
    cmdline = rules.mangle_cmdline(_utf8_to_ucs2(sections[".cmdline"]))
    if not cmdline:
        raise FormatError("UKI .cmdline section is empty after systemd-stub's clean-up")
    if ".initrd" not in sections:
        raise FormatError("UKI has no .initrd section")
    return StubBoot(
        sections=sections,
        measured_sections=measured,
        cmdline=cmdline,
        initrd=rules.assemble_initrd(sections),
    )
