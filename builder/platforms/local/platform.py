"""The local platform behind the interface: QEMU + OVMF + a swtpm provisioned like Azure's.

The image directory that ``aicert-build image`` writes is already where the local
platform boots from, so publishing checks that it is complete and names it; every
run removes all it made (QEMU, swtpm, scratch disk, TPM state), so nothing is left
to destroy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from aicert.builder.platforms.base import BootedImage, Leftover, PublishedImage, Say
from aicert.builder.platforms.local.run import LocalRun, boot_local, image_files


class LocalPlatform:
    """``--platform local``: boots an image directory on this machine."""

    @property
    def name(self) -> str:
        return "local"

    def boot(self, spec: LocalRun, *, say: Say) -> AbstractContextManager[BootedImage]:
        return boot_local(spec, say=say)

    def publish(self, spec: Path, *, say: Say) -> PublishedImage:
        """``spec`` is the image directory; it is complete or this raises InputError."""
        disk, _recipe = image_files(spec)
        say(f"the local platform boots {disk} where it is")
        return PublishedImage(image_id=str(spec), already_published=True)

    def leftovers(self, scope: None) -> tuple[Leftover, ...]:
        return ()

    def destroy(self, scope: None, *, say: Say) -> tuple[str, ...]:
        say("nothing to delete: every local run removes what it made when it ends")
        return ()
