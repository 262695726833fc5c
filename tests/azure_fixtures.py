"""Fixtures shared by the Azure tests: a fake Azure, SDK clients on it, a published image.

Loaded for every test module through ``pytest_plugins`` in conftest.py; a module may
override a fixture (e.g. ``fake``) and request the one defined here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aicert.builder.platforms.azure.clients import AzureClients, ClientOptions
from aicert.builder.platforms.azure.deploy import DeploymentSpec, deploy_image
from aicert.builder.platforms.azure.upload import RetryPolicy
from azure_fake import FakeAzure, FakeCredential

MIB = 1 << 20
RG = "aicert-rg"


@pytest.fixture
def fake() -> FakeAzure:
    azure = FakeAzure()
    azure.add_resource_group(RG)
    return azure


def sparse_disk(path: Path, size: int, chunks: dict[int, bytes]) -> Path:
    """A sparse raw disk of ``size`` bytes holding ``chunks`` at their offsets."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    return path


def cli_context(fake: FakeAzure) -> dict[str, object]:
    """The click context object that points aicert-build's Azure commands at ``fake``."""
    return {
        "azure_credential": FakeCredential(),
        "azure_options": ClientOptions(transport=fake.transport(), polling_interval=0),
    }


@pytest.fixture
def clients(fake: FakeAzure) -> AzureClients:
    return AzureClients(
        fake.subscription,
        FakeCredential(),
        ClientOptions(transport=fake.transport(), polling_interval=0),
    )


@pytest.fixture
def image_version(clients: AzureClients, tmp_path: Path) -> str:
    """A gallery image version published from a small disk with 1 MiB of data."""
    disk = sparse_disk(tmp_path / "disk.raw", 24 * MIB, {0: os.urandom(MIB)})
    spec = DeploymentSpec(
        resource_group=RG, location="westeurope", disk=disk, image_version="1.0.0"
    )
    return deploy_image(clients, spec, retry=RetryPolicy(first_delay=0)).image_version_id
