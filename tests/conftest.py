"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import ProvisionResult, provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm

pytest_plugins = ["azure_fixtures", "aws_fixtures"]

# --------------------------------------------------------------------------- swtpm
# A real swtpm, provisioned like Azure's vTPM (AK at 0x81000003, its certificate in
# NV 0x01C101D0) under a local test CA. ``provisioned_swtpm`` gives the whole set;
# ``swtpm_tcti`` just its TCTI string, for code that only talks to the TPM.

SWTPM_VM_ID = "aicert-test-vm"


@dataclass(frozen=True)
class ProvisionedSwtpm:
    """A running TCP-mode swtpm, provisioned like Azure's vTPM with ``ca``."""

    swtpm: Swtpm
    tcti: str
    ca: LocalCa
    provisioned: ProvisionResult
    state_dir: Path


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """One local vTPM CA for the whole run (its RSA-4096 keys take a moment to make)."""
    return LocalCa.load_or_create(tmp_path_factory.mktemp("local-ca"))


@pytest.fixture
def swtpm_state_dir(tmp_path: Path) -> Path:
    return tmp_path / "tpmstate"


@pytest.fixture
def running_swtpm(swtpm_state_dir: Path) -> Iterator[Swtpm]:
    """A fresh, unprovisioned swtpm in TCP mode, stopped after the test."""
    with Swtpm.tcp(swtpm_state_dir) as tpm:
        yield tpm


@pytest.fixture
def provisioned_swtpm(
    running_swtpm: Swtpm, local_ca: LocalCa, swtpm_state_dir: Path
) -> ProvisionedSwtpm:
    """A fresh swtpm provisioned like Azure's vTPM (AK + AK certificate in NV)."""
    result = provision_like_azure(running_swtpm.tcti, local_ca, SWTPM_VM_ID)
    return ProvisionedSwtpm(running_swtpm, running_swtpm.tcti, local_ca, result, swtpm_state_dir)


@pytest.fixture
def swtpm_tcti(provisioned_swtpm: ProvisionedSwtpm) -> str:
    """The TCTI string of a fresh provisioned swtpm."""
    return provisioned_swtpm.tcti


# --------------------------------------------------------------------------- image
# The qemu-profile image, built once per test run (warm mkosi caches: about a minute)
# into .cache/test-image, and shared by every system test that boots it.


@pytest.fixture(scope="session")
def built_image() -> Path:
    """Directory with disk.raw, uki.efi and recipe.json of the current source tree.

    It is built from a snapshot of the tree, kept next to it as ``../source``, so that
    tests can rebuild exactly the same sources.
    """
    import shutil

    from aicert.builder.image import DEFAULT_CACHE, ImageRequest, build_image
    from aicert.builder.mkosi import snapshot_sources

    base = DEFAULT_CACHE.parent / "test-image"
    shutil.rmtree(base / "source", ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    source = snapshot_sources(base / "source")
    output = base / "qemu"
    build_image(ImageRequest(output=output, source_root=source), on_line=lambda _line: None)
    return output


# --------------------------------------------------------------------------- UKI oracles
# Debian's ukify, systemd-stub 252/254/257, systemd-measure and trixie's kernel, fetched
# once per run into .cache/uki-oracles by scripts/fetch-ukify.sh (private APT configs).

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def uki_oracles() -> Path:
    """The oracle cache; skips only when the Debian mirror cannot be reached."""
    import subprocess

    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/fetch-ukify.sh"), "--with-kernel"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 2:
        pytest.skip(f"Debian mirror unreachable: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])
