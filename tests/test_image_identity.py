"""The image identity the agent records and the verifier checks against a reference."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from aicert.verifier.boot.authenticode import authenticode_digest
from aicert.verifier.boot.boot_reference import reference_from_uki
from aicert.verifier.boot.image_identity import (
    ImageIdentity,
    check_image_identity,
    identity_of_uki,
    roothash_from_cmdline,
    uki_authenticode_from_log,
)
from aicert.verifier.errors import FormatError, ImageIdentityError
from aicert.verifier.logs.tcg_log import parse_event_log
from hypothesis import given
from hypothesis import strategies as st
from pe_build import SectionSpec, build_pe
from test_uki import small_uki
from tpm_replay import OVMF_LOG

ROOTHASH = "7c" * 32
# README of the shared OVMF boot log: Authenticode(UKI)=5fad3168…
LOGGED_UKI_PREFIX = "5fad3168"


def _uki(cmdline: str) -> bytes:
    return build_pe(
        [SectionSpec(b".osrel", b"ID=debian\n"), SectionSpec(b".cmdline", cmdline.encode() + b"\0")]
    )


def test_roothash_is_read_from_the_command_line() -> None:
    assert roothash_from_cmdline(f"console=ttyS0 roothash={ROOTHASH} ro") == ROOTHASH
    assert roothash_from_cmdline(f"roothash={ROOTHASH}") == ROOTHASH
    assert roothash_from_cmdline("console=ttyS0 ro") == ""
    assert roothash_from_cmdline("myroothash=" + ROOTHASH) == ""


@pytest.mark.parametrize(
    "cmdline",
    [
        f"roothash={ROOTHASH} roothash={ROOTHASH}",
        "roothash=" + "7C" * 32,
        "roothash=" + "7c" * 31,
        "roothash=",
        "x" * 70_000,
    ],
)
def test_an_ambiguous_or_malformed_root_hash_is_refused(cmdline: str) -> None:
    with pytest.raises(FormatError):
        roothash_from_cmdline(cmdline)


@given(st.text(max_size=200))
def test_any_command_line_gives_a_root_hash_or_a_format_error(cmdline: str) -> None:
    with contextlib.suppress(FormatError):
        found = roothash_from_cmdline(cmdline)
        assert found == "" or (len(found) == 64 and found in cmdline)


def test_the_uki_digest_is_pcr_4s_first_boot_application() -> None:
    log = parse_event_log(OVMF_LOG.read_bytes())
    assert uki_authenticode_from_log(log).startswith(LOGGED_UKI_PREFIX)


def test_a_uki_yields_what_an_agent_booted_from_it_records() -> None:
    uki = _uki(f"roothash={ROOTHASH} console=ttyS0")
    identity = identity_of_uki(uki)
    assert identity == ImageIdentity(ROOTHASH, authenticode_digest(uki).hex())


def test_a_uki_reference_carries_the_image_identity(tmp_path: Path) -> None:
    path = tmp_path / "uki.efi"
    uki = small_uki(_cmdline=f"roothash={ROOTHASH} ro\n".encode())
    path.write_bytes(uki)
    reference = reference_from_uki(path)
    assert reference.image == ImageIdentity(ROOTHASH, authenticode_digest(uki).hex())


def test_identity_checks() -> None:
    log = parse_event_log(OVMF_LOG.read_bytes())
    logged = uki_authenticode_from_log(log)
    reference = ImageIdentity(ROOTHASH, logged)
    assert "root hash" in check_image_identity(reference, reference, "recipe r.json", log)
    # Without a firmware log the agent cannot know the UKI digest: the root hash suffices.
    check_image_identity(ImageIdentity(ROOTHASH), reference, "recipe r.json", None)
    cases = [
        (ImageIdentity("", logged), log, "names no root hash"),
        (ImageIdentity("11" * 32, logged), log, "root hash"),
        (ImageIdentity(ROOTHASH, "22" * 32), log, "firmware log"),
        (ImageIdentity(ROOTHASH), log, "firmware log"),
        (ImageIdentity(ROOTHASH, "22" * 32), None, "recipe r.json's"),
    ]
    for claimed, with_log, message in cases:
        with pytest.raises(ImageIdentityError, match=message):
            check_image_identity(claimed, reference, "recipe r.json", with_log)


def test_image_facts_must_be_hex() -> None:
    with pytest.raises(FormatError):
        ImageIdentity("not hex")
