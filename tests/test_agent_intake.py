"""Input intake: tar streams extracted while hashed equal hash_tree; refusals; URL and git."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import ssl
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.agent.intake import (
    BodyReader,
    IncompleteBodyError,
    IntakeError,
    fetch_git,
    fetch_url,
    receive_file_input,
    remove_path,
    write_config,
)
from aicert.agent.tls import self_signed_certificate
from aicert.verifier.digest.treehash import hash_tree
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicert.process import run
from aicert.tar_receive import receive_tar


def _tar_of(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(root, arcname=".")
    return buffer.getvalue()


def _body(data: bytes, *, chunked: bool = False, cut: int = 0) -> BodyReader:
    if not chunked:
        return BodyReader(io.BytesIO(data[: len(data) - cut]), len(data))
    framed = b"".join(
        f"{len(data[i : i + 7000]):x}\r\n".encode() + data[i : i + 7000] + b"\r\n"
        for i in range(0, len(data), 7000)
    )
    framed += b"0\r\n\r\n"
    return BodyReader(io.BytesIO(framed[: len(framed) - cut]), None)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a" / "b" / "deep.txt").write_text("deep\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "naïve - ünïcode.txt").write_text("unicode name\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return root


@pytest.mark.parametrize("chunked", [False, True])
def test_tar_digest_equals_hash_tree_of_the_extracted_directory(
    tree: Path, tmp_path: Path, chunked: bool
) -> None:
    dest = tmp_path / "dest"
    manifest = receive_tar(_body(_tar_of(tree), chunked=chunked), dest)
    assert manifest == hash_tree(dest)
    assert manifest.digest == hash_tree(tree).digest
    assert "empty-dir" in manifest.directories
    assert os.access(dest / "run.sh", os.X_OK)
    assert not os.access(dest / "empty.bin", os.X_OK)


def test_tar_made_by_gnu_tar_is_accepted(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "src.tar"
    run(["tar", "-C", str(tree), "-cf", str(archive), "."])
    manifest = receive_tar(_body(archive.read_bytes()), tmp_path / "dest")
    assert manifest.digest == hash_tree(tree).digest


def test_expected_digest(tree: Path, tmp_path: Path) -> None:
    data = _tar_of(tree)
    good = hash_tree(tree).digest
    assert receive_tar(_body(data), tmp_path / "one", expected_digest=good).digest == good
    with pytest.raises(IntakeError, match="not the expected") as refused:
        receive_tar(_body(data), tmp_path / "two", expected_digest="0" * 64)
    assert refused.value.status == 422
    assert not (tmp_path / "two").exists()


@pytest.mark.parametrize("chunked", [False, True])
def test_cut_body_is_refused_and_nothing_kept(tree: Path, tmp_path: Path, chunked: bool) -> None:
    with pytest.raises(IncompleteBodyError) as refused:
        receive_tar(_body(_tar_of(tree), chunked=chunked, cut=5000), tmp_path / "dest")
    assert refused.value.status == 400
    assert not (tmp_path / "dest").exists()


def test_cut_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IncompleteBodyError):
        receive_file_input(_body(b"x" * 100_000, cut=1), tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_single_file_digest_equals_hash_tree(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    manifest = receive_file_input(_body(data, chunked=True), tmp_path / "f")
    assert manifest == hash_tree(tmp_path / "f")
    assert manifest.files[0].digest == hashlib.sha256(data).hexdigest()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return buffer.getvalue()


def _link(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = _member(name, kind)
    info.linkname = "a"
    return info, None


REFUSED = {
    "absolute": ((_member("/abs"), b"x"),),
    "dotdot": ((_member("a/../../x"), b"x"),),
    "symlink": (_link("s", tarfile.SYMTYPE),),
    "hardlink": ((_member("a"), b"x"), _link("h", tarfile.LNKTYPE)),
    "chardev": ((_member("dev", tarfile.CHRTYPE), None),),
    "blockdev": ((_member("dev", tarfile.BLKTYPE), None),),
    "fifo": ((_member("fifo", tarfile.FIFOTYPE), None),),
    "duplicate-file": ((_member("a"), b"x"), (_member("a"), b"x")),
    "duplicate-dir": ((_member("d", tarfile.DIRTYPE), None), (_member("d", tarfile.DIRTYPE), None)),
    "file-then-dir": ((_member("a"), b"x"), (_member("a", tarfile.DIRTYPE), None)),
    "under-a-file": ((_member("a"), b"x"), (_member("a/b"), b"x")),
    "not-nfc": ((_member("cafe\u0301"), b"x"),),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_dangerous_members_are_refused(case: str, tmp_path: Path) -> None:
    with pytest.raises(IntakeError) as refused:
        receive_tar(_body(_archive(*REFUSED[case])), tmp_path / "dest")
    assert refused.value.status == 422
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "x").exists()


def test_data_after_the_archive_is_refused(tmp_path: Path) -> None:
    data = _archive((_member("a"), b"x")) + b"trailing garbage"
    with pytest.raises(IntakeError, match="follows the end"):
        receive_tar(_body(data), tmp_path / "dest")


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(IntakeError) as refused:
        receive_tar(_body(b"this is not a tar archive" * 100), tmp_path / "dest")
    assert refused.value.status == 422


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]
_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.lists(_NAMES, min_size=1, max_size=3).map("/".join),
        st.binary(max_size=3000),
        min_size=1,
        max_size=8,
    )
)
def test_random_trees_match_hash_tree(files: dict[str, bytes], tmp_path: Path) -> None:
    import shutil
    import unicodedata

    source = tmp_path / "hyp-src"
    dest = tmp_path / "hyp-dest"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    source.mkdir()
    written: set[str] = set()
    for raw, data in sorted(files.items()):
        name = unicodedata.normalize("NFC", raw)
        parts = name.split("/")
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if name in written or prefixes & written or any(w.startswith(name + "/") for w in written):
            continue
        if any(unicodedata.normalize("NFC", p) != p for p in parts):
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
        written.add(name)
    manifest = receive_tar(_body(_tar_of(source)), dest)
    assert manifest == hash_tree(dest) == hash_tree(source)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_mutated_tar_streams_raise_only_intake_errors(
    position: int, value: int, tmp_path: Path
) -> None:
    import shutil

    data = bytearray(_archive((_member("a/b.txt"), b"x"), (_member("c"), b"y")))
    data[position % len(data)] = value
    dest = tmp_path / "mut"
    shutil.rmtree(dest, ignore_errors=True)
    try:
        manifest = receive_tar(_body(bytes(data)), dest)
    except IntakeError:
        assert not dest.exists()
        return
    assert manifest == hash_tree(dest)


def test_bad_chunk_framing(tmp_path: Path) -> None:
    body = BodyReader(io.BytesIO(b"zz\r\nabc\r\n0\r\n\r\n"), None)
    with pytest.raises(IntakeError, match="chunk size"):
        receive_file_input(body, tmp_path / "f")


def test_config_is_canonical_json(tmp_path: Path) -> None:
    manifest = write_config({"b": [1, 2.5], "a": "é"}, tmp_path / "cfg")
    assert (tmp_path / "cfg" / "config.json").read_bytes() == '{"a":"é","b":[1,2.5]}'.encode()
    assert manifest == hash_tree(tmp_path / "cfg")


# --------------------------------------------------------------------------- git


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A local repository with two commits; (path, first commit, second commit)."""
    path = tmp_path / "repo"
    path.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }

    def git(*args: str) -> str:
        return (run(["git", "-C", str(path), *args], env=env).stdout or b"").decode().strip()

    git("init", "-q", "-b", "main")
    (path / "train.py").write_text("print('v1')\r\n")
    (path / "sub").mkdir()
    (path / "sub" / "x.txt").write_text("x\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    first = git("rev-parse", "HEAD")
    (path / "train.py").write_text("print('v2')\n")
    git("commit", "-q", "-am", "two")
    return path, first, git("rev-parse", "HEAD")


def test_git_checkout_of_an_exact_commit(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    path, first, _second = repo
    dest = tmp_path / "code"
    manifest = fetch_git(
        f"file://{path}", first, dest, tmp_path / "git" / "code", schemes=("file",)
    )
    assert (dest / "train.py").read_bytes() == b"print('v1')\r\n"
    assert not (dest / ".git").exists()
    assert manifest == hash_tree(dest)
    assert (tmp_path / "git" / "code").is_dir()


def test_git_unknown_commit_and_scheme(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    path, _first, _second = repo
    with pytest.raises(IntakeError) as unknown:
        fetch_git(f"file://{path}", "1" * 40, tmp_path / "c", tmp_path / "g", schemes=("file",))
    assert unknown.value.status == 502
    assert not (tmp_path / "c").exists()
    with pytest.raises(IntakeError, match="must use https"):
        fetch_git(f"file://{path}", "1" * 40, tmp_path / "c", tmp_path / "g")
    with pytest.raises(IntakeError, match="full lowercase hex"):
        fetch_git("https://example.invalid/r.git", "main", tmp_path / "c", tmp_path / "g")


# --------------------------------------------------------------------------- https URLs


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext, bytes]]:
    """A local HTTPS server for one file; the client context trusts its certificate."""
    payload = os.urandom(300_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "data.bin").write_bytes(payload)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_certificate(key)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    client_ctx.check_hostname = False
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", client_ctx, payload
    finally:
        server.shutdown()
        server.server_close()


def test_url_fetch_checks_the_sha256(
    https_server: tuple[str, ssl.SSLContext, bytes], tmp_path: Path
) -> None:
    base, context, payload = https_server
    good = hashlib.sha256(payload).hexdigest()
    manifest = fetch_url(f"{base}/data.bin", tmp_path / "f", good, context=context)
    assert manifest == hash_tree(tmp_path / "f")
    with pytest.raises(IntakeError, match="expected") as refused:
        fetch_url(f"{base}/data.bin", tmp_path / "g", "0" * 64, context=context)
    assert refused.value.status == 422
    assert not (tmp_path / "g").exists()
    with pytest.raises(IntakeError) as missing:
        fetch_url(f"{base}/nothing", tmp_path / "h", good, context=context)
    assert missing.value.status == 502


def test_url_fetch_refuses_untrusted_tls_and_plain_http(
    https_server: tuple[str, ssl.SSLContext, bytes], tmp_path: Path
) -> None:
    base, _context, payload = https_server
    good = hashlib.sha256(payload).hexdigest()
    with pytest.raises(IntakeError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        fetch_url(f"{base}/data.bin", tmp_path / "f", good)
    with pytest.raises(IntakeError, match="https"):
        fetch_url(base.replace("https", "http") + "/data.bin", tmp_path / "f", good)


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(raw=st.binary(max_size=400))
def test_random_chunked_bodies_raise_only_intake_errors(raw: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "random-body"
    remove_path(dest)
    try:
        receive_file_input(BodyReader(io.BytesIO(raw), None), dest)
    except IntakeError:
        assert not dest.exists()
