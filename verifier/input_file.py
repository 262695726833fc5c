"""Reading a file the user named, whole: a regular file no larger than its cap.

Every command-line input that is read into memory (certificate, recipe, UKI, trust
roots, profiles, job file) goes through :func:`read_input_file`, so a 2 GB file, a
FIFO, a device or a directory given by mistake is one clear :class:`InputError`
(exit 3), not a memory spike or a hang. Inputs that are only hashed (weights, data
sets, measured files) are streamed by :mod:`.digest.treehash` and need no cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from .errors import InputError

MIB: Final = 1024 * 1024
MAX_CERTIFICATE_BYTES: Final = 64 * MIB
MAX_RECIPE_BYTES: Final = 16 * MIB
MAX_UKI_BYTES: Final = 512 * MIB
MAX_PEM_BYTES: Final = 1 * MIB
"""A trust root, a Secure Boot certificate, an intermediate CA file."""
MAX_PROFILE_BYTES: Final = 1 * MIB
MAX_REFERENCE_BYTES: Final = 64 * MIB
MAX_JOB_FILE_BYTES: Final = 1 * MIB
# A firmware log is tens of KiB; a kernel or firmware bug must not make the agent read without end.
MAX_FIRMWARE_LOG_BYTES: Final = 16 * MIB

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK: Final = 1 * MIB


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _unreadable(what: str, path: Path, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{what} {path} does not exist")
    return InputError(f"cannot read {what} {path}: {exc.strerror}")


def read_input_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``; InputError naming ``what`` otherwise.

    The size is checked before opening (a device is never opened) and again while
    reading, since some files (securityfs, /proc) report a size of 0 or grow.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{what} {path} is {_kind(mode)}, not a file")
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _unreadable(what, path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {path} is {_kind(st.st_mode)}, not a file")
        if st.st_size > limit:
            raise InputError(_too_large(what, path, limit))
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InputError(_too_large(what, path, limit))
    except OSError as exc:
        raise _unreadable(what, path, exc) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _too_large(what: str, path: Path, limit: int) -> str:
    shown = f"{limit // MIB} MiB" if limit and limit % MIB == 0 else f"{limit} bytes"
    return f"{what} {path} is larger than {shown}, the most accepted for it"
