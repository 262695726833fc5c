"""What ``aicert-build destroy gcp`` finds and deletes: aicert's images, and the VMs and
firewall rules of runs that did not end (a killed process cannot clean up).

Images and VMs carry the ``aicert-managed`` label. Firewall rules have no labels in
Compute Engine; a run names its rule after its VM (``aicert-run-…``), so they are
found by that name. VMs go first, then their rules, then images.
"""

from __future__ import annotations

from functools import partial

from aicert.builder.platforms.base import Leftover, Say
from aicert.builder.platforms.gcp.clients import GcpClients
from aicert.builder.platforms.gcp.deploy import LABEL_MANAGED
from aicert.builder.platforms.gcp.run import RUN_PREFIX, delete_if_present
from google.cloud import compute_v1


def find_leftovers(clients: GcpClients, deployment: str | None = None) -> list[Leftover]:
    """aicert's VMs (``zones/ZONE/instances/NAME``), firewall rules and images, in the
    order they are deleted; with ``deployment``, only those of that name."""
    labelled = f"labels.{LABEL_MANAGED}=true"
    project = clients.project
    # The pagers fetch further pages while iterated: inside the call.
    zones = clients.call(
        "listing VMs",
        lambda: list(
            clients.instances.aggregated_list(
                request=compute_v1.AggregatedListInstancesRequest(project=project, filter=labelled)
            )
        ),
    )
    rules = clients.call(
        "listing firewall rules",
        lambda: list(
            clients.firewalls.list(
                request=compute_v1.ListFirewallsRequest(
                    project=project, filter=f'name eq "{RUN_PREFIX}.*"'
                )
            )
        ),
    )
    images = clients.call(
        "listing images",
        lambda: list(
            clients.images.list(
                request=compute_v1.ListImagesRequest(project=project, filter=labelled)
            )
        ),
    )
    # The filters are checked again here: what is deleted must be aicert's.
    found = [
        Leftover("instance", f"{zone}/instances/{vm.name}")
        for zone, scoped in zones
        for vm in scoped.instances
        if vm.labels.get(LABEL_MANAGED) == "true" and deployment in (None, vm.name)
    ]
    found += [
        Leftover("firewall", rule.name)
        for rule in rules
        if rule.name.startswith(RUN_PREFIX) and deployment in (None, rule.name)
    ]
    found += [
        Leftover("image", image.name)
        for image in images
        if image.labels.get(LABEL_MANAGED) == "true" and deployment in (None, image.name)
    ]
    return found


def delete_leftovers(clients: GcpClients, found: list[Leftover], *, say: Say) -> list[Leftover]:
    """Delete ``found`` in its order; what is gone already counts as deleted."""
    project = clients.project
    for item in found:
        action = f"deleting {item.kind} {item.id}"
        say(action)
        if item.kind == "instance":
            zone_path, _, name = item.id.partition("/instances/")
            zone = zone_path.removeprefix("zones/")
            delete_if_present(
                clients,
                action,
                partial(clients.instances.delete, project=project, zone=zone, instance=name),
                zone,
            )
        elif item.kind == "firewall":
            delete_if_present(
                clients,
                action,
                partial(clients.firewalls.delete, project=project, firewall=item.id),
                None,
            )
        else:
            delete_if_present(
                clients,
                action,
                partial(clients.images.delete, project=project, image=item.id),
                None,
            )
    return found
