"""The Azure platform behind the interface: a Compute Gallery image, Trusted Launch VMs.

Publishing uploads the disk and creates a gallery image version (:mod:`.deploy`);
booting creates one VM from it and deletes its resources at the end (:mod:`.run`);
destroying deletes what aicert tagged in a resource group.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TextIO

from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome, run_on
from aicert.builder.platforms.azure.clients import AzureClients
from aicert.builder.platforms.azure.deploy import (
    DeploymentSpec,
    deploy_image,
    destroy,
    find_managed,
)
from aicert.builder.platforms.azure.run import AzureRun, boot_vm, new_vm_name
from aicert.builder.platforms.azure.upload import RetryPolicy
from aicert.builder.platforms.base import BootedImage, Leftover, PublishedImage, Say


@dataclass(frozen=True)
class AzureScope:
    """What ``destroy`` deletes: aicert's resources in a resource group (of one deployment)."""

    resource_group: str
    deployment: str | None = None
    """GALLERY/DEFINITION/VERSION or vm/NAME; None: every aicert resource of the group."""


class AzurePlatform:
    """``--platform azure`` and ``deploy azure``, through one set of Azure clients."""

    def __init__(
        self,
        clients: AzureClients,
        *,
        vm_names: Callable[[], str] = new_vm_name,
        workers: int = 8,
        retry: RetryPolicy | None = None,
        progress_stream: TextIO | None = None,
    ) -> None:
        self.clients = clients
        self.vm_names = vm_names
        self.workers = workers
        self.retry = retry
        self.progress_stream = progress_stream

    @property
    def name(self) -> str:
        return "azure"

    def boot(self, spec: AzureRun, *, say: Say) -> AbstractContextManager[BootedImage]:
        return boot_vm(self.clients, spec, vm_name=self.vm_names(), say=say)

    def publish(self, spec: DeploymentSpec, *, say: Say) -> PublishedImage:
        result = deploy_image(
            self.clients,
            spec,
            say=say,
            workers=self.workers,
            retry=self.retry,
            progress_stream=self.progress_stream,
        )
        up = result.upload
        summary = (
            None
            if up is None
            else f"sent {up.bytes_sent} bytes of a {up.raw_size}-byte disk "
            f"({up.page_writes} page writes, {up.retries} retries)"
        )
        return PublishedImage(result.image_version_id, result.already_published, summary)

    def leftovers(self, scope: AzureScope) -> tuple[Leftover, ...]:
        found = find_managed(self.clients, scope.resource_group, deployment=scope.deployment)
        return tuple(Leftover(res.type, res.id) for res in found)

    def destroy(self, scope: AzureScope, *, say: Say) -> tuple[str, ...]:
        deleted = destroy(self.clients, scope.resource_group, deployment=scope.deployment, say=say)
        return tuple(res.id for res in deleted)


def run_azure(
    spec: AzureRun,
    job: JobFile,
    *,
    clients: AzureClients,
    say: Say,
    log_sink: Callable[[bytes], None] | None = None,
    vm_name: str | None = None,
) -> JobOutcome:
    """Create the VM, run ``job`` on its attested agent, verify, and delete the VM."""
    platform = AzurePlatform(clients, vm_names=(lambda: vm_name) if vm_name else new_vm_name)
    return run_on(platform, spec, job, spec.output, say=say, log_sink=log_sink)
