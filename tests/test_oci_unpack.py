"""Layer unpacking: real tar layers applied to a directory, every refusal, and property
tests of the member-name check."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from aicert.agent.oci.errors import OciError
from aicert.agent.oci.unpack import RootfsWriter, member_parts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oci_support import Entry, directory, file, hardlink, layer_tar, sha256, symlink

BIG = 1 << 30


def apply(root: Path, *layers: bytes, max_bytes: int = BIG, compression: str = "") -> RootfsWriter:
    writer = RootfsWriter(root, max_bytes)
    for i, layer in enumerate(layers):
        blob = gzip.compress(layer) if compression == "gzip" else layer
        writer.apply_layer(io.BytesIO(blob), compression, sha256(layer), f"layer {i}")
    return writer


def test_layers_build_a_tree(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    base = layer_tar(
        [
            directory("usr"),
            directory("usr/bin"),
            file("usr/bin/python3", b"#!/bin/true\n", 0o4755),
            symlink("bin", "usr/bin"),
            hardlink("usr/bin/python", "usr/bin/python3"),
            file("etc/deep/missing/parents.conf", b"x"),
            file("tmp/.keep"),
        ]
    )
    top = layer_tar([file("./usr/bin/python3", b"new"), file("etc//hosts", b"127.0.0.1\n")])
    apply(root, base, top, compression="gzip")
    assert (root / "usr/bin/python3").read_bytes() == b"new"
    assert (root / "usr/bin/python").read_bytes() == b"#!/bin/true\n"  # linked before replaced
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "etc/deep/missing/parents.conf").read_bytes() == b"x"
    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1\n"
    # Set-user-ID is dropped; the permission bits stay.
    assert (root / "usr/bin/python").stat().st_mode & 0o7777 == 0o755


def test_whiteouts_remove_lower_entries(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    base = layer_tar(
        [file("a/keep"), file("a/gone"), file("b/x"), file("b/y"), file("c/old"), directory("d")]
    )
    top = layer_tar(
        [
            file("a/.wh.gone"),
            file("b/.wh..wh..opq"),
            file("b/new"),
            file(".wh.c"),
            file("d/.wh.never-there"),
        ]
    )
    apply(root, base, top)
    assert sorted(os.listdir(root / "a")) == ["keep"]
    assert sorted(os.listdir(root / "b")) == ["new"]
    assert not (root / "c").exists()
    assert os.listdir(root / "d") == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([file("../escape")], "climbs out of the root"),
        ([file("a/../../escape")], "climbs out of the root"),
        ([file("/etc/passwd")], "absolute name"),
        ([Entry("dev/null", kind=tarfile.CHRTYPE)], "device file"),
        ([Entry("dev/sda", kind=tarfile.BLKTYPE)], "device file"),
        ([Entry("run/fifo", kind=tarfile.FIFOTYPE)], "FIFO"),
        ([file("x"), hardlink("y", "../outside")], "climbs out of the root"),
        ([hardlink("y", "etc/passwd")], "not in the root"),
        ([hardlink("y", "/etc/passwd")], "absolute name"),
        ([file("a/../.wh.x")], "climbs out of the root"),
        ([file("../.wh.etc")], "climbs out of the root"),
        ([file("a/b"), file("a/.wh..."), file("a/.wh..")], "does not name an entry"),
    ],
)
def test_refused_members(tmp_path: Path, entries: list[Entry], message: str) -> None:
    (tmp_path / "outside").write_text("precious")
    with pytest.raises(OciError, match=message):
        apply(tmp_path / "rootfs", layer_tar(entries))
    assert (tmp_path / "outside").read_text() == "precious"


def test_never_writes_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = layer_tar([symlink("etc", str(outside)), symlink("rel", "../outside")])
    for attack in ("etc/passwd", "rel/passwd"):
        root = tmp_path / f"rootfs-{attack[:3]}"
        with pytest.raises(OciError, match="symbolic link is never followed"):
            apply(root, base, layer_tar([file(attack, b"owned")]))
    # A whiteout through the link cannot delete outside either.
    (outside / "victim").write_text("x")
    with pytest.raises(OciError, match="symbolic link is never followed"):
        apply(tmp_path / "rootfs-wh", base, layer_tar([file("etc/.wh.victim")]))
    assert os.listdir(outside) == ["victim"]


def test_replacing_a_symlink_with_a_file_writes_inside(tmp_path: Path) -> None:
    outside = tmp_path / "target"
    outside.write_text("precious")
    root = tmp_path / "rootfs"
    apply(root, layer_tar([symlink("f", str(outside))]), layer_tar([file("f", b"inside")]))
    assert outside.read_text() == "precious"
    assert (root / "f").read_bytes() == b"inside"
    assert not (root / "f").is_symlink()


def test_hardlink_to_a_symlink_target_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("secret")
    layer = layer_tar([symlink("s", str(outside)), hardlink("h", "s")])
    with pytest.raises(OciError, match="not a regular file"):
        apply(tmp_path / "rootfs", layer)


def test_size_cap_is_checked_while_unpacking(tmp_path: Path) -> None:
    layer = layer_tar([file(f"f{i}", os.urandom(64 * 1024)) for i in range(8)])
    with pytest.raises(OciError, match="does not fit the scratch disk") as info:
        apply(tmp_path / "rootfs", layer, max_bytes=300 * 1024)
    assert info.value.status == 507
    # Refused before the member that crossed the cap was written.
    assert len(os.listdir(tmp_path / "rootfs")) <= 4
    # Many empty files count too.
    many = layer_tar([file(f"e{i}") for i in range(200)])
    with pytest.raises(OciError, match="does not fit"):
        apply(tmp_path / "rootfs2", many, max_bytes=50 * 1024)


def test_wrong_diff_id_is_refused(tmp_path: Path) -> None:
    writer = RootfsWriter(tmp_path / "rootfs", BIG)
    layer = layer_tar([file("a", b"1")])
    with pytest.raises(OciError, match="not its diff ID"):
        writer.apply_layer(io.BytesIO(layer), "", sha256(b"other"), "layer 0")


def test_malformed_layers_are_refused(tmp_path: Path) -> None:
    writer = RootfsWriter(tmp_path / "rootfs", BIG)
    with pytest.raises(OciError, match="not a well-formed layer"):
        writer.apply_layer(io.BytesIO(b"not gzip at all" * 100), "gzip", None, "layer 0")
    truncated = gzip.compress(layer_tar([file("a", os.urandom(10000))]))[:-500]
    with pytest.raises(OciError, match="not a well-formed layer"):
        writer.apply_layer(io.BytesIO(truncated), "gzip", None, "layer 1")


# -- properties of the member-name check -----------------------------------------------------

_parts = st.lists(
    st.sampled_from(["a", "b", "..", ".", "", "etc", "x.y", ".wh.z"]), min_size=1, max_size=6
)


@given(_parts, st.booleans())
def test_member_parts_never_escape(parts: list[str], absolute: bool) -> None:
    name = ("/" if absolute else "") + "/".join(parts)
    absolute = name.startswith("/")
    try:
        result = member_parts(name)
    except OciError:
        assert absolute or ".." in parts
        return
    assert not absolute
    assert ".." not in result
    assert all(p and p != "." and "/" not in p for p in result)
    assert result == tuple(p for p in parts if p not in ("", "."))


@given(st.text(max_size=300))
def test_member_parts_only_raises_oci_errors(name: str) -> None:
    try:
        parts = member_parts(name)
    except OciError:
        return
    assert not name.startswith("/")
    assert ".." not in parts
    assert "\x00" not in name


_names = st.sampled_from(["a", "b", "a/b", "a/b/c", "..", "../x", "/abs", "a/../../x", "l", "l/x"])
_targets = st.sampled_from(["a", "a/b", "../outside", "/", "..", "l", "outside-link"])
_entry = st.one_of(
    st.builds(lambda n: file(n, b"data"), _names),
    st.builds(directory, _names),
    st.builds(symlink, _names, st.sampled_from(["..", "../..", "/", "a", "../outside"])),
    st.builds(hardlink, _names, _targets),
    st.builds(lambda n: file(f"{n}/.wh.b" if n != "/abs" else ".wh.a"), _names),
    st.builds(lambda n: file(f"{n}/.wh..wh..opq"), _names),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(_entry, max_size=6), min_size=1, max_size=3))
def test_hostile_layer_sequences_never_touch_anything_outside(
    tmp_path: Path, layers: list[list[Entry]]
) -> None:
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    outside = case / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (case / "sibling").write_text("keep")
    before = sorted(p.relative_to(case) for p in case.rglob("*"))
    root = case / "rootfs"
    with contextlib.suppress(OciError):
        apply(root, *(layer_tar(entries) for entries in layers))
    left = sorted(p.relative_to(case) for p in case.rglob("*") if not p.is_relative_to(root))
    assert left == before
    assert (outside / "precious").read_text() == "keep"
    assert (case / "sibling").read_text() == "keep"
    # Whatever was unpacked is only regular files, directories and symbolic links.
    for path in root.rglob("*") if root.exists() else ():
        mode = path.lstat().st_mode
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


def test_oversized_extended_headers_are_refused_before_reading(tmp_path: Path) -> None:
    # PAX and GNU long-name headers whose size fields claim 4 GiB, followed by far less.
    for kind in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME):
        header = tarfile.TarInfo("././@LongHeader")
        header.type = kind
        header.size = 4 << 30
        head = header.tobuf(format=tarfile.USTAR_FORMAT)
        with pytest.raises(OciError, match="extended header claims 4294967296 bytes"):
            apply(tmp_path / f"rootfs-{kind.decode()}", head + bytes(4096))
