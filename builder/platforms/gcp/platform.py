"""The GCP platform behind the interface: a Compute Engine image, Shielded VMs."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from aicert.builder.platforms.base import BootedImage, PublishedImage, Say
from aicert.builder.platforms.gcp.clients import GcpClients
from aicert.builder.platforms.gcp.deploy import GcpPublish, destroy, publish_image
from aicert.builder.platforms.gcp.run import GcpRun, boot_vm, new_vm_name


@dataclass(frozen=True)
class GcpScope:
    """What ``destroy`` deletes: one image, or every image aicert labelled."""

    image: str | None = None


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

    def destroy(self, scope: GcpScope, *, say: Say) -> tuple[str, ...]:
        return destroy(self.clients, image=scope.image, say=say)
