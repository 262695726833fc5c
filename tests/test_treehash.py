"""Tree digests: manifest contents, sharding, refusals, changes during hashing, scale."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, MIN_SHARD_SIZE, FileDigest
from aicert.verifier.digest.treehash import hash_file, hash_tree, list_tree
from aicert.verifier.digest.treemanifest import (
    FileEntry,
    TreeManifest,
    differences,
    parse_manifest,
)
from aicert.verifier.errors import FormatError, InputError
from aicert.verifier.progress import NullProgress, TerminalProgress, progress_for
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicert.digest_cli import digest_command
from aicert.model_signing_interop import model_signing_digest

S = MIN_SHARD_SIZE  # a small shard size keeps sharded files small in tests


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sharded_reference(data: bytes, shard_size: int) -> str:
    """The shard construction of docs/tree-digest.md, written out independently."""
    if len(data) <= shard_size:
        return sha(data)
    shards = b"".join(
        hashlib.sha256(data[i : i + shard_size]).digest() for i in range(0, len(data), shard_size)
    )
    prefix = b"aicert-shards-v1\x00" + struct.pack(">QQ", shard_size, len(data))
    return sha(prefix + shards)


def noise(seed: object, size: int) -> bytes:
    """Deterministic incompressible test data."""
    return hashlib.shake_256(repr(seed).encode()).digest(size)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class Hook(NullProgress):
    """A progress sink that runs test actions at the moments hashing reports progress."""

    def __init__(
        self,
        on_start: Callable[[], None] | None = None,
        on_advance: Callable[[], None] | None = None,
    ) -> None:
        self.on_start = on_start
        self.on_advance = on_advance
        self.advanced = 0

    def start(self, total_bytes: int | None) -> None:
        if self.on_start:
            self.on_start()

    def advance(self, nbytes: int) -> None:
        self.advanced += nbytes
        if self.on_advance:
            action, self.on_advance = self.on_advance, None
            action()


# --------------------------------------------------------------------------- manifest contents


def test_manifest_lists_files_and_directories_in_canonical_json(tmp_path: Path) -> None:
    write(tmp_path / "b.bin", b"hello")
    write(tmp_path / "a" / "x.txt", b"")
    (tmp_path / "a" / "empty").mkdir()
    manifest = hash_tree(tmp_path, workers=2)
    expected = (
        '{"directories":["a","a/empty"],"files":['
        f'{{"digest":"{sha(b"")}","path":"a/x.txt","size":0}},'
        f'{{"digest":"{sha(b"hello")}","path":"b.bin","size":5}}],'
        f'"shard_size":{DEFAULT_SHARD_SIZE},"version":1}}'
    ).encode()
    assert manifest.canonical_bytes() == expected
    assert manifest.digest == sha(expected)
    assert manifest.total_bytes == 5
    assert parse_manifest(expected) == manifest


def test_empty_directory_root(tmp_path: Path) -> None:
    manifest = hash_tree(tmp_path)
    assert manifest.files == ()
    assert manifest.directories == ()
    assert manifest.canonical_bytes() == (
        f'{{"directories":[],"files":[],"shard_size":{DEFAULT_SHARD_SIZE},"version":1}}'.encode()
    )


def test_single_file_root_has_the_empty_path_and_ignores_its_name(tmp_path: Path) -> None:
    one = write(tmp_path / "one.bin", b"weights")
    two = write(tmp_path / "renamed.bin", b"weights")
    manifest = hash_tree(one)
    assert manifest.files == (FileEntry("", 7, sha(b"weights")),)
    assert manifest.directories == ()
    assert hash_tree(two).digest == manifest.digest
    # A directory holding that file is a different tree.
    folder = tmp_path / "dir"
    write(folder / "one.bin", b"weights")
    assert hash_tree(folder).digest != manifest.digest


def test_names_are_nfc_normalised(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "café.txt")
    write(tmp_path / decomposed, b"x")
    manifest = hash_tree(tmp_path)
    assert [f.path for f in manifest.files] == [unicodedata.normalize("NFC", "café.txt")]


def test_control_and_non_ascii_names_encode_as_rfc8785(tmp_path: Path) -> None:
    write(tmp_path / "a\nb\x01\x7fé€😀", b"")
    body = hash_tree(tmp_path, shard_size=0).canonical_bytes()
    # JCS: \n and U+0001 escaped (lowercase hex), DEL and non-ASCII written as raw UTF-8.
    assert '"path":"a\\nb\\u0001\x7fé€😀"'.encode() in body


# --------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 2 * S, 3 * S + 17])
def test_file_digest_follows_the_documented_construction(tmp_path: Path, size: int) -> None:
    data = noise(size, size)
    path = write(tmp_path / "f", data)
    for workers in (1, 2, 5):
        got = hash_file(path, shard_size=S, workers=workers)
        assert got.digest == sharded_reference(data, S)
        assert got.sha256 == (sha(data) if size <= S else None)
    plain = hash_file(path, shard_size=0, workers=2)
    assert plain == FileDigest(size, 0, sha(data), sha(data))


def test_shard_size_is_part_of_the_manifest(tmp_path: Path) -> None:
    write(tmp_path / "big", noise(1, 3 * S))
    small = hash_tree(tmp_path, shard_size=S)
    large = hash_tree(tmp_path, shard_size=2 * S)
    assert small.files[0].digest != large.files[0].digest
    assert small.digest != large.digest


def test_bad_shard_size_and_worker_count_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="shard size"):
        hash_tree(tmp_path, shard_size=4096)
    with pytest.raises(InputError, match="workers"):
        hash_tree(tmp_path, workers=0)


# --------------------------------------------------------------------------- refusals


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        hash_tree(tmp_path / "nope")


def test_symlinks_are_refused_by_default_and_followed_on_request(tmp_path: Path) -> None:
    outside = write(tmp_path / "blob", b"content")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "model.bin").symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        hash_tree(tree)
    followed = hash_tree(tree, follow_symlinks=True)
    assert followed.files == (FileEntry("model.bin", 7, sha(b"content")),)
    (tree / "loop").symlink_to(tree)
    with pytest.raises(InputError, match="does not point to a regular file"):
        hash_tree(tree, follow_symlinks=True)


def test_symlink_root_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "real" / "f", b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="symbolic link"):
        hash_tree(tmp_path / "link")


def test_dangling_symlink_with_follow(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(InputError, match="cannot be followed"):
        hash_tree(tmp_path, follow_symlinks=True)


def test_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match="is a FIFO"):
        hash_tree(tmp_path)


def test_socket_is_refused(tmp_path: Path) -> None:
    # AF_UNIX paths are limited to ~108 bytes; bind with a short relative path.
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        sock.bind("s")
        with pytest.raises(InputError, match="is a socket"):
            hash_tree(tmp_path)
    finally:
        os.chdir(cwd)
        sock.close()


def test_device_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with pytest.raises(InputError, match="is a character device"):
        hash_tree(tmp_path)


def test_hard_links_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a", b"x")
    os.link(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InputError, match="2 hard links"):
        hash_tree(tmp_path)


def test_non_utf8_name_is_refused(tmp_path: Path) -> None:
    fd = os.open(os.path.join(os.fsencode(tmp_path), b"bad\xffname"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(InputError, match="not valid UTF-8"):
        hash_tree(tmp_path)


def test_names_colliding_after_nfc_are_refused(tmp_path: Path) -> None:
    write(tmp_path / unicodedata.normalize("NFC", "é"), b"1")
    write(tmp_path / unicodedata.normalize("NFD", "é"), b"2")
    with pytest.raises(InputError, match="NFC"):
        hash_tree(tmp_path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        hash_file(tmp_path)


# --------------------------------------------------------------------------- changes while hashing


def test_file_vanishing_after_listing(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", b"data")
    with pytest.raises(InputError, match="vanished"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_start=victim.unlink))


def test_file_replaced_after_listing(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", b"data")

    def replace() -> None:
        victim.unlink()
        write(victim, b"evil")

    with pytest.raises(InputError, match="replaced or modified"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_start=replace))


def test_file_replaced_by_fifo_after_listing_does_not_block(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", b"data")

    def replace() -> None:
        victim.unlink()
        os.mkfifo(victim)

    with pytest.raises(InputError, match="replaced or modified"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_start=replace))


def test_file_replaced_by_symlink_after_listing(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", b"data")
    secret = write(tmp_path.parent / f"{tmp_path.name}-secret", b"data")

    def replace() -> None:
        victim.unlink()
        victim.symlink_to(secret)

    with pytest.raises(InputError, match="cannot be opened"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_start=replace))


def test_directory_swapped_for_symlink_after_listing(tmp_path: Path) -> None:
    write(tmp_path / "d" / "f", b"inside")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    write(elsewhere / "f", b"inside")

    def swap() -> None:
        (tmp_path / "d").rename(tmp_path / "moved")
        (tmp_path / "d").symlink_to(elsewhere)

    # The file is opened through the swapped path but its inode is not the one listed.
    with pytest.raises(InputError, match="replaced or modified"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_start=swap))


def test_file_growing_while_hashed(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", bytes(3 * 1024 * 1024))

    def append() -> None:
        with victim.open("ab") as f:
            f.write(b"more")

    with pytest.raises(InputError, match="changed while it was being hashed"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_advance=append))


def test_file_truncated_while_hashed(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", bytes(3 * 1024 * 1024))
    hook = Hook(on_advance=lambda: os.truncate(victim, 1024 * 1024))
    with pytest.raises(InputError, match="became shorter"):
        hash_tree(tmp_path, workers=1, progress=hook)


def test_file_rewritten_in_place_with_same_size(tmp_path: Path) -> None:
    victim = write(tmp_path / "a", bytes(3 * 1024 * 1024))

    def rewrite() -> None:
        with victim.open("r+b") as f:
            f.write(b"\xff")
        # Make sure the timestamps move even on a coarse clock.
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    with pytest.raises(InputError, match="changed while it was being hashed"):
        hash_tree(tmp_path, workers=1, progress=Hook(on_advance=rewrite))


def test_file_added_while_hashing(tmp_path: Path) -> None:
    write(tmp_path / "a", b"data")
    hook = Hook(on_start=lambda: write(tmp_path / "late", b"x") and None)
    with pytest.raises(InputError, match="tree changed"):
        hash_tree(tmp_path, workers=1, progress=hook)


def test_error_in_one_worker_stops_the_pool(tmp_path: Path) -> None:
    for i in range(50):
        write(tmp_path / f"f{i:02d}", bytes(2 * S))
    victim = tmp_path / "f25"
    with pytest.raises(InputError, match="vanished"):
        hash_tree(tmp_path, workers=4, shard_size=S, progress=Hook(on_start=victim.unlink))


UNREADABLE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from aicert.verifier.errors import InputError
    from aicert.verifier.digest.treehash import hash_tree
    # Import first: the interpreter's own files may not be readable by "nobody".
    os.setgid(65534); os.setuid(65534)
    try:
        hash_tree(sys.argv[1])
    except InputError as exc:
        print(exc.message)
        sys.exit(3)
    """
)


def test_unreadable_file() -> None:
    # chmod 000 does not stop root: drop to "nobody" in a child process when running as root.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the unprivileged child must reach the files
        write(Path(tmp) / "ok", b"ok")
        secret = write(Path(tmp) / "secret", b"no")
        secret.chmod(0)
        if os.geteuid() == 0:
            proc = subprocess.run(
                [sys.executable, "-c", UNREADABLE_SCRIPT, tmp],
                capture_output=True,
                text=True,
                check=False,
            )
            assert proc.returncode == 3, proc.stderr
            assert "permission denied" in proc.stdout
            assert "secret" in proc.stdout
        else:
            with pytest.raises(InputError, match="permission denied"):
                hash_tree(tmp)


# --------------------------------------------------------------------------- scale and memory


def test_twenty_thousand_small_files(tmp_path: Path) -> None:
    contents = {}
    for d in range(20):
        folder = tmp_path / f"d{d:02d}"
        folder.mkdir()
        for i in range(1000):
            data = noise((d, i), (d * 1000 + i) % 200)
            (folder / f"f{i:04d}").write_bytes(data)
            contents[f"d{d:02d}/f{i:04d}"] = data
    manifest = hash_tree(tmp_path, workers=2)
    assert len(manifest.files) == 20_000
    assert len(manifest.directories) == 20
    assert {f.path: f.digest for f in manifest.files} == {p: sha(d) for p, d in contents.items()}
    assert hash_tree(tmp_path, workers=1).digest == manifest.digest


PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from aicert.verifier.digest.treehash import hash_file
    if sys.argv[2] == "hash":
        digest = hash_file(sys.argv[1], workers=2, shard_size=int(sys.argv[3]))
        print(digest.digest)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_memory_stays_bounded_on_a_2_gib_file() -> None:
    size = 2 * 1024**3
    shard = 256 * 1024 * 1024
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        sparse = os.path.join(tmp, "sparse.bin")
        with open(sparse, "wb") as f:
            f.truncate(size)  # reads as zeros, occupies no disk

        def peak_kib(*args: str) -> list[str]:
            proc = subprocess.run(
                [sys.executable, "-c", PEAK_RSS_SCRIPT, sparse, *args],
                capture_output=True,
                text=True,
                check=True,
            )
            return proc.stdout.split()

        baseline = int(peak_kib("import")[0])
        digest, hashed = peak_kib("hash", str(shard))
    zero_shard = hashlib.sha256(bytes(shard)).digest()
    prefix = b"aicert-shards-v1\x00" + struct.pack(">QQ", shard, size)
    assert digest == sha(prefix + zero_shard * (size // shard))
    # Two workers with one 1 MiB buffer each: far below the 2 GiB file.
    assert int(hashed) - baseline < 64 * 1024, (baseline, hashed)


# --------------------------------------------------------------------------- independence

NAME = st.text(
    alphabet=st.characters(
        codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="/"
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and unicodedata.normalize("NFC", s) == s)

TREE = st.dictionaries(
    st.lists(NAME, min_size=1, max_size=3).map(tuple),
    st.integers(min_value=0, max_value=3 * S + 5),
    max_size=12,
)


def build(root: Path, tree: dict[tuple[str, ...], int], order: list[tuple[str, ...]]) -> bool:
    """Create the tree's files in ``order``; False if the names do not form a valid tree."""
    for parts in order:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as f:
                f.write(noise(parts, tree[parts]))
        except (FileExistsError, NotADirectoryError, IsADirectoryError, OSError):
            return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREE, data=st.data())
def test_digest_is_independent_of_workers_and_creation_order(
    tree: dict[tuple[str, ...], int], data: st.DataObject
) -> None:
    order = sorted(tree)
    shuffled = data.draw(st.permutations(order))
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        if not build(Path(one), tree, order):
            return  # e.g. a file name that is also a directory name
        assert build(Path(two), tree, shuffled)
        reference = hash_tree(one, shard_size=S, workers=1)
        for workers in (2, 3, 8):
            assert hash_tree(two, shard_size=S, workers=workers) == reference
        assert parse_manifest(reference.canonical_bytes()) == reference


# --------------------------------------------------------------------------- manifest parsing


def sample_manifest() -> TreeManifest:
    return TreeManifest(
        S,
        (FileEntry("a/b.bin", 10, "0" * 64), FileEntry("c", 0, "f" * 64)),
        ("a", "a/empty"),
    )


def mutate(obj: dict[str, object], change: Callable[[dict[str, object]], None]) -> bytes:
    copy = json.loads(json.dumps(obj))
    change(copy)
    return json.dumps(copy, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


BAD_MANIFESTS: list[tuple[str, Callable[[dict[str, object]], None], str]] = [
    ("version", lambda m: m.update(version=2), "version"),
    ("float", lambda m: m.update(shard_size=1.5), "shard_size must be 0 or an integer"),
    ("tiny shard", lambda m: m.update(shard_size=4096), "shard_size"),
    ("escape", lambda m: m["files"][0].update(path="../b.bin"), "plain relative"),
    ("absolute", lambda m: m["files"][0].update(path="/a/b.bin"), "plain relative"),
    ("dot", lambda m: m["files"][0].update(path="a/./b.bin"), "plain relative"),
    ("nul", lambda m: m["files"][0].update(path="a/b\x00"), "plain relative"),
    ("nfd", lambda m: m["files"][1].update(path="e\u0301"), "NFC"),
    ("unsorted", lambda m: m["files"].reverse(), "sorted"),
    ("dup dirs", lambda m: m["directories"].append("a/empty"), "sorted"),
    ("no parent", lambda m: m["directories"].remove("a"), "not listed"),
    ("file is dir", lambda m: m["directories"].append("c"), "both"),
    ("bool size", lambda m: m["files"][0].update(size=True), "size"),
    ("negative", lambda m: m["files"][0].update(size=-1), "size"),
    ("huge", lambda m: m["files"][0].update(size=2**53), "outside the range JSON numbers keep"),
    ("upper hex", lambda m: m["files"][0].update(digest="A" * 64), "digest"),
    ("short hex", lambda m: m["files"][0].update(digest="0" * 63), "digest"),
    ("extra key", lambda m: m["files"][0].update(mode=420), "exactly the keys"),
    ("missing key", lambda m: m.pop("directories"), "exactly the keys"),
    ("empty path", lambda m: m["files"][0].update(path=""), "non-empty"),
    ("not a list", lambda m: m.update(files={}), "arrays"),
]


@pytest.mark.parametrize(("name", "change", "message"), BAD_MANIFESTS, ids=lambda x: x)
def test_invalid_manifests_are_refused(
    name: str, change: Callable[[dict[str, object]], None], message: str
) -> None:
    data = mutate(sample_manifest().to_json(), change)
    with pytest.raises(FormatError, match=message):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"version": 1}', "canonical|exactly"),
        (b"\xff", "UTF-8"),
        (b"[" * 100_000, "nested|JSON"),
        (b"{", "not valid JSON"),
        (b'{"a":1,"a":2}', "duplicate"),
        (b"NaN", "NaN is not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"directories":["\\ud800"],"files":[],"shard_size":0,"version":1}', "Unicode"),
    ],
)
def test_malformed_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_manifest(data)


def test_non_canonical_encoding_is_refused() -> None:
    manifest = sample_manifest()
    pretty = json.dumps(manifest.to_json(), sort_keys=True, indent=1).encode()
    with pytest.raises(FormatError, match="canonical"):
        parse_manifest(pretty)
    escaped = manifest.canonical_bytes().replace(b'"c"', b'"\\u0063"')
    with pytest.raises(FormatError, match="canonical"):
        parse_manifest(escaped)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_manifest(data)


@given(st.data())
def test_mutated_manifests_raise_only_format_errors(data: st.DataObject) -> None:
    body = bytearray(sample_manifest().canonical_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_manifest(bytes(body))
    except FormatError:
        return
    assert parsed.canonical_bytes() == bytes(body)


def test_model_signing_digest_needs_plain_sha256(tmp_path: Path) -> None:
    write(tmp_path / "big", bytes(S + 1))
    with pytest.raises(InputError, match="shard size 0"):
        model_signing_digest(hash_tree(tmp_path, shard_size=S))
    model_signing_digest(hash_tree(tmp_path, shard_size=0))


def test_differences_name_every_changed_entry(tmp_path: Path) -> None:
    write(tmp_path / "same", b"s")
    write(tmp_path / "resized", b"1")
    write(tmp_path / "edited", b"a")
    write(tmp_path / "removed", b"r")
    (tmp_path / "old-dir").mkdir()
    before = hash_tree(tmp_path)
    write(tmp_path / "resized", b"22")
    write(tmp_path / "edited", b"b")
    (tmp_path / "removed").unlink()
    write(tmp_path / "added", b"n")
    (tmp_path / "old-dir").rmdir()
    (tmp_path / "new-dir").mkdir()
    after = hash_tree(tmp_path)
    assert differences(before, after) == [
        "unexpected file added",
        "edited: contents differ",
        "missing file removed",
        "resized: 2 bytes instead of 1",
        "missing directory old-dir",
        "unexpected directory new-dir",
    ]
    assert differences(before, before) == []
    assert differences(before, hash_tree(tmp_path, shard_size=S)) == [
        f"shard size {S} instead of {DEFAULT_SHARD_SIZE}"
    ]


def test_list_tree_sorts_by_manifest_path(tmp_path: Path) -> None:
    for name in ("b", "a-b", "a/b", "A"):
        write(tmp_path / name, b"")
    assert [f.path for f in list_tree(tmp_path).files] == ["A", "a-b", "a/b", "b"]


# --------------------------------------------------------------------------- progress and CLI


def test_terminal_progress_line() -> None:
    out = io.StringIO()
    progress = TerminalProgress(out, interval=0.0)
    progress.start(4 * 1024**3)
    progress.advance(1024**3)
    progress.finish()
    line = out.getvalue()
    assert "1.00 GiB / 4.00 GiB" in line
    assert "/s" in line
    assert "ETA" in line
    assert line.endswith("\n")
    assert progress.done == 1024**3


def test_progress_is_quiet_when_not_a_terminal() -> None:
    assert isinstance(progress_for(io.StringIO()), NullProgress)


def test_progress_sees_every_byte(tmp_path: Path) -> None:
    write(tmp_path / "a", bytes(3 * S + 1))
    write(tmp_path / "b", bytes(10))
    hook = Hook()
    hash_tree(tmp_path, shard_size=S, workers=2, progress=hook)
    assert hook.advanced == 3 * S + 11


def test_cli_text_and_json(tmp_path: Path) -> None:
    write(tmp_path / "w" / "model.bin", b"weights")
    runner = CliRunner()
    text = runner.invoke(digest_command, [str(tmp_path), "--workers", "2"])
    assert text.exit_code == 0, text.output
    manifest = hash_tree(tmp_path)
    assert f"tree digest:     sha256:{manifest.digest}" in text.output
    assert "files:           1" in text.output
    assert "total bytes:     7 " in text.output
    as_json = runner.invoke(digest_command, [str(tmp_path), "--json", "--shard-size", "0"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    plain = hash_tree(tmp_path, shard_size=0)
    assert report["tree_digest"] == plain.digest
    assert report["file_count"] == 1
    assert report["total_bytes"] == 7
    assert report["model_signing_sha256"] == model_signing_digest(plain)
    assert report["manifest"] == plain.to_json()


def test_cli_errors_are_aicert_errors(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    result = CliRunner().invoke(digest_command, [str(tmp_path)])
    assert isinstance(result.exception, InputError)
    # A shard size the format forbids is a bad option value (usage, exit 2), not bad input.
    result = CliRunner().invoke(digest_command, [str(tmp_path), "--shard-size", "5"])
    assert result.exit_code == 2
    assert "--shard-size" in result.output
