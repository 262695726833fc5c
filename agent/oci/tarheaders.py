"""Tar members whose extended headers are bounded before they are read.

``tarfile`` reads a PAX or GNU long-name header into memory whole, however large its
size field says it is; a layer could claim gigabytes. :class:`BoundedTarInfo` refuses
such a header before reading it (pass it as ``tarfile.open(tarinfo=...)``).
"""

from __future__ import annotations

import tarfile
from typing import Any, Final

from .errors import OciError

MAX_HEADER_BYTES: Final = 1024 * 1024


class BoundedTarInfo(tarfile.TarInfo):
    def _check_header(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise OciError(
                f"a tar extended header claims {self.size} bytes, more than {MAX_HEADER_BYTES}"
            )

    def _proc_pax(self, tarfile: Any) -> Any:
        self._check_header()
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_gnulong(self, tarfile: Any) -> Any:
        self._check_header()
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]
