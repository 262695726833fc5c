"""The AWS platform behind the interface: an AMI from an EBS snapshot, one EC2 instance per run.

Publishing uploads the disk and registers the AMI (:mod:`.deploy`); booting launches
one instance and deletes all the run made at the end (:mod:`.run`); destroying
deletes what aicert tagged in the region.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome, run_on
from aicert.builder.platforms.base import BootedImage, Leftover, PublishedImage, Say

from .clients import AwsClients
from .deploy import AwsDeploySpec, deploy_image, destroy, find_managed
from .run import AwsRun, boot_instance, new_run_name


@dataclass(frozen=True)
class AwsScope:
    """What ``destroy`` deletes: aicert's resources in the region (of one deployment)."""

    deployment: str | None = None
    """An AMI name or run/NAME; None: every aicert resource of the region."""


class AwsPlatform:
    """``--platform aws`` and ``deploy aws``, through one set of boto3 clients."""

    def __init__(self, clients: AwsClients, *, run_names: Callable[[], str] = new_run_name) -> None:
        self.clients = clients
        self.run_names = run_names

    @property
    def name(self) -> str:
        return "aws"

    def boot(self, spec: AwsRun, *, say: Say) -> AbstractContextManager[BootedImage]:
        return boot_instance(self.clients, spec, run_name=self.run_names(), say=say)

    def publish(self, spec: AwsDeploySpec, *, say: Say) -> PublishedImage:
        result = deploy_image(self.clients, spec, say=say)
        up = result.upload
        summary = (
            None
            if up is None
            else f"sent {up.bytes_sent} bytes of a {up.disk_size}-byte disk "
            f"({up.blocks_written} blocks of 512 KiB)"
        )
        return PublishedImage(result.image_id, result.already_published, summary)

    def leftovers(self, scope: AwsScope) -> tuple[Leftover, ...]:
        return tuple(find_managed(self.clients, scope.deployment))

    def destroy(self, scope: AwsScope, *, say: Say) -> tuple[str, ...]:
        return tuple(m.id for m in destroy(self.clients, scope.deployment, say=say))


def run_aws(
    spec: AwsRun,
    job: JobFile,
    *,
    clients: AwsClients,
    say: Say,
    log_sink: Callable[[bytes], None] | None = None,
    run_name: str | None = None,
) -> JobOutcome:
    """Launch the instance, run ``job`` on its attested agent, verify, and delete it all."""
    platform = AwsPlatform(clients, run_names=(lambda: run_name) if run_name else new_run_name)
    return run_on(platform, spec, job, spec.output, say=say, log_sink=log_sink)
