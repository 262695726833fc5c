"""Tree digests of a file or directory, hashed in parallel at disk speed.

:func:`hash_tree` lists the tree (refusing anything whose digest would be ambiguous or
unsafe), hashes every file — large files as independent shards — on a pool of threads
(hashlib releases the GIL), lists the tree again to prove nothing was added, removed or
changed meanwhile, and returns the :class:`~.treemanifest.TreeManifest`. The result does
not depend on the number of workers. Memory stays at one read buffer per worker.
"""

from __future__ import annotations

import os
import stat
import threading
import unicodedata
from dataclasses import dataclass
from typing import Final

from ..errors import InputError
from ..progress import NullProgress, Progress
from .filehash import (
    DEFAULT_SHARD_SIZE,
    READ_SIZE,
    FileDigest,
    StatSnapshot,
    check_shard_size,
    combine_shards,
    hash_range,
    is_sharded,
    shard_ranges,
)
from .treemanifest import FileEntry, TreeManifest

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ListedFile:
    """A regular file found by the walk: manifest path, path to open, state when listed."""

    path: str
    os_path: str
    snapshot: StatSnapshot
    follow: bool


@dataclass(frozen=True)
class Listing:
    """Everything under a root, sorted by manifest path."""

    files: tuple[ListedFile, ...]
    directories: tuple[str, ...]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file or directory"


def _regular_file(os_path: str, st: os.stat_result, *, follow_symlinks: bool) -> StatSnapshot:
    """The snapshot of a regular file, or a one-line refusal of anything else."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        if not follow_symlinks:
            raise InputError(
                f"{os_path}: is a symbolic link; symlinks are refused unless follow_symlinks is set"
            )
        try:
            st = os.stat(os_path)
        except OSError as exc:
            raise InputError(
                f"{os_path}: symbolic link cannot be followed: {exc.strerror}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{os_path}: symbolic link does not point to a regular file")
        mode = st.st_mode
    if not stat.S_ISREG(mode):
        raise InputError(f"{os_path}: is {_kind(mode)}; only regular files can be hashed")
    if st.st_nlink != 1:
        raise InputError(
            f"{os_path}: has {st.st_nlink} hard links; its contents could change through "
            "another name, so it is refused"
        )
    return StatSnapshot.of(st)


def _scan(os_dir: str, expected: tuple[int, int]) -> list[tuple[str, os.stat_result]]:
    """Names and lstat of a directory's entries, if it is still the directory listed."""
    try:
        fd = os.open(os_dir, _DIR_FLAGS)
    except OSError as exc:
        raise InputError(f"{os_dir}: cannot open directory: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != expected:
            raise InputError(f"{os_dir}: directory was replaced while the tree was listed")
        with os.scandir(fd) as it:
            return [(e.name, e.stat(follow_symlinks=False)) for e in it]
    except FileNotFoundError:
        raise InputError(f"{os_dir}: an entry vanished while the tree was listed") from None
    except PermissionError:
        raise InputError(f"{os_dir}: cannot be listed (permission denied)") from None
    finally:
        os.close(fd)


def _manifest_name(raw: str, os_dir: str) -> str:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(raw)
        raise InputError(f"{os_dir}: entry {shown!r} has a name that is not valid UTF-8") from None
    return unicodedata.normalize("NFC", raw)


def list_tree(root: str | os.PathLike[str], *, follow_symlinks: bool = False) -> Listing:
    """List every regular file and directory under ``root`` (a directory or a single file).

    Refuses symlinks (unless ``follow_symlinks``, which hashes what a link to a regular file
    points to; links to directories are always refused), devices, FIFOs, sockets, hard-linked
    files, names that are not UTF-8 and names that collide after NFC normalisation.
    """
    top = os.fspath(root)
    try:
        st = os.lstat(top)
    except OSError as exc:
        raise InputError(f"{top}: cannot be read: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        snap = _regular_file(top, st, follow_symlinks=follow_symlinks)
        return Listing((ListedFile("", top, snap, stat.S_ISLNK(st.st_mode)),), ())
    files: list[ListedFile] = []
    dirs: list[str] = []
    # Iterative walk so deep trees cannot exhaust the interpreter's recursion limit.
    pending: list[tuple[str, str, tuple[int, int]]] = [("", top, (st.st_dev, st.st_ino))]
    while pending:
        rel_dir, os_dir, identity = pending.pop()
        seen: dict[str, str] = {}
        for raw, entry_st in _scan(os_dir, identity):
            name = _manifest_name(raw, os_dir)
            if name in seen:
                raise InputError(
                    f"{os_dir}: names {seen[name]!r} and {raw!r} are the same after Unicode "
                    "NFC normalisation"
                )
            seen[name] = raw
            rel = f"{rel_dir}/{name}" if rel_dir else name
            os_path = os.path.join(os_dir, raw)
            if stat.S_ISDIR(entry_st.st_mode):
                dirs.append(rel)
                pending.append((rel, os_path, (entry_st.st_dev, entry_st.st_ino)))
            else:
                snap = _regular_file(os_path, entry_st, follow_symlinks=follow_symlinks)
                files.append(ListedFile(rel, os_path, snap, stat.S_ISLNK(entry_st.st_mode)))
    files.sort(key=lambda f: f.path)
    dirs.sort()
    return Listing(tuple(files), tuple(dirs))


@dataclass(frozen=True)
class _Task:
    file_index: int
    shard_index: int
    offset: int
    length: int


def _hash_files(
    files: tuple[ListedFile, ...], shard_size: int, workers: int, progress: Progress
) -> list[list[bytes]]:
    """SHA-256 of every shard of every file (one shard per unsharded file), in file order."""
    tasks = [
        _Task(i, s, offset, length)
        for i, f in enumerate(files)
        for s, (offset, length) in enumerate(shard_ranges(f.snapshot.size, shard_size))
    ]
    # Longest first, so the last task to finish is a short one and no worker idles long.
    tasks.sort(key=lambda t: t.length, reverse=True)
    results = [[b""] * len(shard_ranges(f.snapshot.size, shard_size)) for f in files]
    lock = threading.Lock()
    queue = iter(tasks)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        buf = bytearray(READ_SIZE)
        while not stop.is_set():
            with lock:
                task = next(queue, None)
            if task is None:
                return
            listed = files[task.file_index]
            try:
                digest = hash_range(
                    listed.os_path,
                    listed.snapshot,
                    offset=task.offset,
                    length=task.length,
                    buf=buf,
                    progress=progress,
                    follow=listed.follow,
                )
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stop.set()
                return
            results[task.file_index][task.shard_index] = digest

    count = min(workers, len(tasks))
    if count <= 1:
        work()
    else:
        threads = [threading.Thread(target=work, name=f"treehash-{n}") for n in range(count)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    if errors:
        raise errors[0]
    return results


def _file_digest(size: int, shard_size: int, shards: list[bytes]) -> str:
    if is_sharded(size, shard_size):
        return combine_shards(shard_size, size, shards).hex()
    return shards[0].hex()


def default_workers() -> int:
    return os.cpu_count() or 1


def hash_tree(
    root: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
) -> TreeManifest:
    """The manifest (and so the tree digest, ``.digest``) of the file or directory ``root``.

    ``shard_size`` 0 gives every file its plain SHA-256 (what sha256sum and model_signing
    compute) at the cost of hashing each file on one core. ``workers`` defaults to the
    number of CPUs and never changes the result.
    """
    check_shard_size(shard_size)
    count = default_workers() if workers is None else workers
    if count < 1:
        raise InputError(f"workers must be at least 1, not {count}")
    sink = NullProgress() if progress is None else progress
    listing = list_tree(root, follow_symlinks=follow_symlinks)
    sink.start(sum(f.snapshot.size for f in listing.files))
    try:
        digests = _hash_files(listing.files, shard_size, count, sink)
    finally:
        sink.finish()
    if list_tree(root, follow_symlinks=follow_symlinks) != listing:
        raise InputError(f"{os.fspath(root)}: the tree changed while it was being hashed")
    entries = tuple(
        FileEntry(f.path, f.snapshot.size, _file_digest(f.snapshot.size, shard_size, shards))
        for f, shards in zip(listing.files, digests, strict=True)
    )
    return TreeManifest(shard_size, entries, listing.directories)


def hash_file(
    path: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
) -> FileDigest:
    """The digest of one regular file (its shards hashed in parallel if it is large)."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise InputError(f"{os.fspath(path)}: is a directory, not a file")
    manifest = hash_tree(
        path,
        shard_size=shard_size,
        workers=workers,
        follow_symlinks=follow_symlinks,
        progress=progress,
    )
    entry = manifest.files[0]
    plain = None if is_sharded(entry.size, shard_size) else entry.digest
    return FileDigest(entry.size, shard_size, entry.digest, plain)
