"""The platform interface: boot the measured image, publish it, destroy what was made.

A platform boots the image and hands back a :class:`BootedImage`: the agent's URL,
the roots its AK certificate must chain to before anything is sent, and the
verification view (trust roots, boot reference, platform profile) that the result
is checked against. From there :func:`aicert.builder.job_runner.run_on` is the one
job flow for every platform. A platform also publishes an image where it can be
booted (:meth:`Platform.publish`), lists what aicert made there
(:meth:`Platform.leftovers`) and removes it (:meth:`Platform.destroy`).

Each platform has its own settings for each operation (a QEMU scratch size, an
Azure resource group), so the interface is generic over them: one type for booting,
one for publishing, one for what to destroy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from aicert.verifier.boot.boot_reference import BootReference
from aicert.verifier.boot.platform_profile import PlatformProfile
from cryptography import x509

Say = Callable[[str], None]

RunT_contra = TypeVar("RunT_contra", contravariant=True)
PublishT_contra = TypeVar("PublishT_contra", contravariant=True)
ScopeT_contra = TypeVar("ScopeT_contra", contravariant=True)

DEFAULT_UP_TIMEOUT = 600.0


@dataclass(frozen=True)
class Verification:
    """What the result is verified against (the auditor's view of this platform)."""

    trust_roots: tuple[x509.Certificate, ...]
    """Roots accepted besides the verifier's bundled ones."""
    boot_reference: BootReference | None
    platform_profile: PlatformProfile | None


def no_failure_seen() -> str | None:
    """For platforms without a console to watch: the agent never reports failure early."""
    return None


@dataclass(frozen=True)
class BootedImage:
    """A booted image whose agent is (or is about to be) reachable."""

    agent_url: str
    """``https://HOST:PORT`` of the agent's API."""
    verification: Verification
    agent_roots: tuple[x509.Certificate, ...]
    """Roots the agent's AK certificate must chain to before any input is sent."""
    intermediates: tuple[bytes, ...] = ()
    """DER CA certificates between those roots and the AK certificate, if known here."""
    up_timeout: float = DEFAULT_UP_TIMEOUT
    """Seconds to wait for the agent's API to answer."""
    agent_failed: Callable[[], str | None] = no_failure_seen
    """Why the agent will never answer (e.g. an error on the VM's console), or None."""
    result_files: tuple[tuple[str, Path], ...] = ()
    """(name, source) files copied next to the certificate once the result verified."""


@dataclass(frozen=True)
class PublishedImage:
    """An image where the platform can boot it."""

    image_id: str
    """What a run names to boot it (a gallery image version id, an image directory)."""
    already_published: bool
    """True when nothing had to be uploaded or created."""
    summary: str | None = None
    """One line on what publishing transferred, if it transferred anything."""


@dataclass(frozen=True)
class Leftover:
    """A resource aicert made on a platform and ``destroy`` would delete."""

    kind: str
    """What it is on that platform (``image``, ``instance``, an ARM resource type)."""
    id: str
    """The platform's id or name for it."""


class Platform(Protocol[RunT_contra, PublishT_contra, ScopeT_contra]):
    """Where the measured image boots."""

    @property
    def name(self) -> str:
        """The name ``--platform`` and ``deploy`` use."""
        ...

    def boot(self, spec: RunT_contra, *, say: Say) -> AbstractContextManager[BootedImage]:
        """Boot the image; leaving the ``with`` block stops it and removes all it made,
        also on errors and Ctrl-C."""
        ...

    def publish(self, spec: PublishT_contra, *, say: Say) -> PublishedImage:
        """Make the image bootable on this platform (idempotent)."""
        ...

    def leftovers(self, scope: ScopeT_contra) -> tuple[Leftover, ...]:
        """What :meth:`destroy` would delete within ``scope``, in the order it deletes."""
        ...

    def destroy(self, scope: ScopeT_contra, *, say: Say) -> tuple[str, ...]:
        """Delete what aicert made on this platform within ``scope``; what was deleted."""
        ...
