"""Booting the measured image on Compute Engine for ``aicert-build run --platform gcp``.

One Shielded VM per job, booted from the published image: vTPM and integrity
monitoring on, Secure Boot as asked (GCE's default db holds Microsoft's keys, so an
unsigned UKI boots only with it off), a gVNIC with an ephemeral public address and an
empty scratch disk. A firewall rule admits only the caller's address, on the agent
port, to this VM's network tag. GCE's vTPM holds the AK template and certificate in NV;
the certificate chains to Google's EK/AK CA Root, bundled with the verifier. The job
flow is :func:`aicert.builder.job_runner.run_on`. The VM (with its disks, auto-delete)
and the firewall rule are deleted at the end, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aicert.builder.platforms.base import BootedImage, Say, Verification
from aicert.builder.platforms.gcp.clients import GcpClients
from aicert.builder.platforms.gcp.deploy import LABEL_MANAGED
from aicert.builder.platforms.gcp.errors import CloudNotFoundError
from aicert.builder.platforms.local.qemu import AGENT_ERROR_MARKER
from aicert.verifier.boot.boot_reference import reference_from_recipe
from aicert.verifier.boot.platform_profile import load_profile
from aicert.verifier.errors import AicertError, CloudError, InputError
from aicert.verifier.tpm.ak_chain import bundled_intermediates, bundled_roots
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.cloud import compute_v1

# 4 vCPUs, 16 GiB; N2 supports Shielded VM and gVNIC in every region. See docs/gcp.md.
DEFAULT_MACHINE_TYPE = "n2-standard-4"
DEFAULT_SCRATCH_GIB = 64
AGENT_PORT = 8443
DEFAULT_BOOT_TIMEOUT = 900.0
LABEL_RUN = "aicert-run"
RUN_PREFIX = "aicert-run-"
"""Every run's VM and firewall rule are named so: how destroy finds the rules."""
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")


@dataclass(frozen=True)
class GcpRun:
    """Where to run one job on GCE and what its result is verified against."""

    zone: str
    image: str
    """The image path ``aicert-build deploy gcp`` printed (projects/P/global/images/N)."""
    output: Path
    recipe: Path
    caller_ip: str
    """This machine's public address: the only one the firewall rule admits."""
    machine_type: str = DEFAULT_MACHINE_TYPE
    scratch_gib: int = DEFAULT_SCRATCH_GIB
    network: str = "default"
    secure_boot: bool = False
    platform_profile: str | None = None
    agent_port: int = AGENT_PORT
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    trust_roots: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not _ZONE.match(self.zone):
            raise InputError(f"zone {self.zone!r} is not a GCE zone name (e.g. europe-west4-a)")
        try:
            address = ipaddress.ip_address(self.caller_ip)
        except ValueError:
            raise InputError(f"--caller-ip {self.caller_ip!r} is not an IP address") from None
        if address.version != 4 or not address.is_global:
            raise InputError(
                f"--caller-ip {self.caller_ip}: give this machine's public IPv4 address"
            )
        if not 10 <= self.scratch_gib <= 65536:
            raise InputError(f"scratch disk of {self.scratch_gib} GiB: give 10 to 65536")


class SerialConsole:
    """The VM's serial port 1 (ttyS0), read for the agent's error line while it boots.

    Read at most every ``every`` seconds and from where the last read ended: the wait for
    the agent polls once a second, and each read is a Compute Engine API call. A failed
    read is no verdict: the console only shortens the wait.
    """

    def __init__(self, clients: GcpClients, zone: str, vm_name: str, every: float = 15.0):
        self.clients = clients
        self.zone = zone
        self.vm_name = vm_name
        self.every = every
        self._next_read = 0.0
        self._start = 0
        self._tail = ""

    def agent_failure(self) -> str | None:
        now = time.monotonic()
        if now < self._next_read:
            return None
        self._next_read = now + self.every
        try:
            output = self.clients.call(
                f"reading the serial console of {self.vm_name}",
                self.clients.instances.get_serial_port_output,
                request=compute_v1.GetSerialPortOutputInstanceRequest(
                    project=self.clients.project,
                    zone=self.zone,
                    instance=self.vm_name,
                    port=1,
                    start=self._start,
                ),
            )
        except CloudError:
            return None
        self._start = int(output.next_)
        # Keep the last partial line: the marker may straddle two reads.
        text = self._tail + str(output.contents)
        lines = text.split("\n")
        self._tail = lines.pop()
        for line in lines:
            if AGENT_ERROR_MARKER in line:
                return line[line.index(AGENT_ERROR_MARKER) :].strip()
        return None


def new_vm_name() -> str:
    return f"{RUN_PREFIX}{secrets.token_hex(4)}"


@contextlib.contextmanager
def boot_vm(clients: GcpClients, spec: GcpRun, *, vm_name: str, say: Say) -> Iterator[BootedImage]:
    """Create the firewall rule and VM until the ``with`` block ends, then delete both."""
    verification = Verification(
        trust_roots=spec.trust_roots,
        boot_reference=reference_from_recipe(spec.recipe),
        platform_profile=load_profile(spec.platform_profile) if spec.platform_profile else None,
    )
    try:
        _create_firewall_rule(clients, spec, vm_name, say)
        ip = _create_instance(clients, spec, vm_name, say)
        say(f"VM {vm_name} created in {spec.zone}, agent at {ip}:{spec.agent_port}")
        yield BootedImage(
            agent_url=f"https://{ip}:{spec.agent_port}",
            verification=verification,
            agent_roots=(*bundled_roots(), *spec.trust_roots),
            intermediates=tuple(
                c.public_bytes(serialization.Encoding.DER) for c in bundled_intermediates()
            ),
            up_timeout=spec.boot_timeout,
            agent_failed=SerialConsole(clients, spec.zone, vm_name).agent_failure,
        )
    finally:
        delete_run(clients, spec.zone, vm_name, say)


def _create_firewall_rule(clients: GcpClients, spec: GcpRun, vm_name: str, say: Say) -> None:
    say(f"creating firewall rule {vm_name}: tcp:{spec.agent_port} from {spec.caller_ip} only")
    rule = compute_v1.Firewall(
        name=vm_name,
        network=f"projects/{clients.project}/global/networks/{spec.network}",
        direction="INGRESS",
        priority=1000,
        source_ranges=[f"{spec.caller_ip}/32"],
        target_tags=[vm_name],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(spec.agent_port)])],
        description="aicert run: the agent port for the caller only",
    )
    operation = clients.call(
        f"creating firewall rule {vm_name}",
        clients.firewalls.insert,
        project=clients.project,
        firewall_resource=rule,
    )
    clients.wait(f"creating firewall rule {vm_name}", operation)


def _create_instance(clients: GcpClients, spec: GcpRun, vm_name: str, say: Say) -> str:
    say(
        f"creating Shielded VM {vm_name} ({spec.machine_type}, Secure Boot"
        f" {'on' if spec.secure_boot else 'off'}, vTPM, integrity monitoring)"
    )
    zone = spec.zone
    instance = compute_v1.Instance(
        name=vm_name,
        machine_type=f"zones/{zone}/machineTypes/{spec.machine_type}",
        labels={LABEL_MANAGED: "true", LABEL_RUN: vm_name},
        tags=compute_v1.Tags(items=[vm_name]),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                type_="PERSISTENT",
                initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=spec.image),
            ),
            compute_v1.AttachedDisk(
                auto_delete=True,
                type_="PERSISTENT",
                device_name="aicert-scratch",
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    disk_size_gb=spec.scratch_gib
                ),
            ),
        ],
        network_interfaces=[
            compute_v1.NetworkInterface(
                network=f"projects/{clients.project}/global/networks/{spec.network}",
                nic_type="GVNIC",
                access_configs=[
                    compute_v1.AccessConfig(name="external-nat", type_="ONE_TO_ONE_NAT")
                ],
            )
        ],
        shielded_instance_config=compute_v1.ShieldedInstanceConfig(
            enable_secure_boot=spec.secure_boot,
            enable_vtpm=True,
            enable_integrity_monitoring=True,
        ),
    )
    operation = clients.call(
        f"creating VM {vm_name}",
        clients.instances.insert,
        project=clients.project,
        zone=zone,
        instance_resource=instance,
    )
    clients.wait(f"creating VM {vm_name}", operation, zone)
    created: compute_v1.Instance = clients.call(
        f"reading VM {vm_name}",
        clients.instances.get,
        project=clients.project,
        zone=zone,
        instance=vm_name,
    )
    config = created.shielded_instance_config
    if not (config.enable_vtpm and config.enable_integrity_monitoring):
        raise CloudError(f"VM {vm_name} was created without its vTPM or integrity monitoring")
    for interface in created.network_interfaces:
        for access in interface.access_configs:
            if access.nat_i_p:
                return str(access.nat_i_p)
    raise CloudError(f"VM {vm_name} has no public address")


def delete_run(clients: GcpClients, zone: str, vm_name: str, say: Say) -> None:
    """Delete the VM (its disks go with it) and its firewall rule; what is missing is
    skipped. If a deletion fails, say which command finishes it."""
    say(f"deleting VM {vm_name} and firewall rule {vm_name}")
    try:
        delete_if_present(
            clients,
            f"deleting VM {vm_name}",
            lambda: clients.instances.delete(project=clients.project, zone=zone, instance=vm_name),
            zone,
        )
        delete_if_present(
            clients,
            f"deleting firewall rule {vm_name}",
            lambda: clients.firewalls.delete(project=clients.project, firewall=vm_name),
            None,
        )
    except (AicertError, KeyboardInterrupt) as exc:
        raise CloudError(
            f"could not delete everything of {vm_name} ({exc}); finish with 'aicert-build"
            f" destroy gcp --project {clients.project} --deployment {vm_name}'"
        ) from exc
    say(f"deleted VM {vm_name} and firewall rule {vm_name}")


def delete_if_present(
    clients: GcpClients, action: str, request: Callable[[], object], zone: str | None
) -> None:
    """Run a delete ``request`` and wait for it (in ``zone``, or global); gone already is done."""
    try:
        operation = clients.call(action, request)
    except CloudNotFoundError:
        return
    clients.wait(action, operation, zone)
