"""The GCP platform behind the interface: a Compute Engine image, Shielded VMs."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from aicert.builder.platforms.base import BootedImage, Leftover, PublishedImage, Say
from aicert.builder.platforms.gcp.clients import GcpClients
from aicert.builder.platforms.gcp.deploy import GcpPublish, publish_image
from aicert.builder.platforms.gcp.destroy import delete_leftovers, find_leftovers
from aicert.builder.platforms.gcp.run import GcpRun, boot_vm, new_vm_name


@dataclass(frozen=True)
class GcpScope:
    """What ``destroy`` deletes: aicert's images, VMs and firewall rules in the project."""

    deployment: str | None = None
    """One image or run VM (with its firewall rule) by name; None: all of them."""


class GcpPlatform:
    """``--platform gcp`` and ``deploy gcp``, through one set of Google Cloud clients."""

    def __init__(self, clients: GcpClients, *, vm_names: Callable[[], str] = new_vm_name) -> None:
        self.clients = clients
        self.vm_names = vm_names

    @property
    def name(self) -> str:
        return "gcp"

    def boot(self, spec: GcpRun, *, say: Say) -> AbstractContextManager[BootedImage]:
        return boot_vm(self.clients, spec, vm_name=self.vm_names(), say=say)

    def publish(self, spec: GcpPublish, *, say: Say) -> PublishedImage:
        return publish_image(self.clients, spec, say=say)

    def leftovers(self, scope: GcpScope) -> tuple[Leftover, ...]:
        return tuple(find_leftovers(self.clients, scope.deployment))

    def destroy(self, scope: GcpScope, *, say: Say) -> tuple[str, ...]:
        found = find_leftovers(self.clients, scope.deployment)
        return tuple(item.id for item in delete_leftovers(self.clients, found, say=say))
