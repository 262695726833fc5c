"""``aicert-build environment``: definitions, the package lock, and real reproducible builds."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from aicert.agent.container import ContainerJob, run_container
from aicert.agent.container_spec import EnvironmentRoot
from aicert.agent.sandbox import SandboxSpec
from aicert.builder.environment import (
    DefinitionError,
    apt_preferences,
    build_environment,
    check_versions,
    load_definition,
    mmdebstrap_argv,
    mounts_below,
    remove_build_dir,
)
from aicert.builder.package_lock import LockMismatchError
from container_host import unified_cgroups

from aicert.process import run

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo" / "environment.toml"


def _definition(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "environment.toml"
    path.write_text(text)
    return path


def test_the_demo_definition_loads() -> None:
    definition = load_definition(DEMO)
    assert definition.suite == "trixie"
    assert definition.packages == ("python3-numpy", "python3-sklearn")
    assert definition.lock == DEMO.parent / "environment.lock.json"
    assert definition.config.cmd == ("python3",)
    assert definition.config.env[:2] == (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    )
    assert "deb http://security.debian.org/debian-security trixie-security main" in (
        definition.sources
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('suite = "trixie"\npackages = ["a1"]\nsource_date_epoch = 1\nextra = 1', "extra: unknown"),
        ('packages = ["a1"]\nsource_date_epoch = 1', "suite:"),
        ('suite = "trixie"\npackages = "a1"\nsource_date_epoch = 1', "packages: must be a list"),
        ('suite = "trixie"\npackages = ["A b"]\nsource_date_epoch = 1', "not a Debian package"),
        ('suite = "trixie"\npackages = ["a1"]\nsource_date_epoch = "x"', "source_date_epoch"),
        ('suite = "trixie"\npackages = ["a1"]\nsource_date_epoch = 1\nvariant = "x"', "variant"),
        (
            'suite = "trixie"\npackages = ["a1"]\nsource_date_epoch = 1\nsources = ["http://x"]',
            "sources:",
        ),
        ('suite = "trixie"\npackages = ["a1"]\nsource_date_epoch = 1\nenv = ["1X=2"]', "env:"),
        ("suite = [", "not valid TOML"),
    ],
)
def test_bad_definitions(tmp_path: Path, text: str, message: str) -> None:
    path = _definition(tmp_path, text)
    with pytest.raises(DefinitionError, match=message) as caught:
        load_definition(path)
    assert caught.value.message.startswith(str(path))
    assert "\n" not in caught.value.message


def test_the_lock_admits_exactly_its_versions(tmp_path: Path) -> None:
    lock = tmp_path / "environment.lock.json"
    locked = {"python3": "3.13.5-1", "libc6": "2.41-12"}
    check_versions(locked, dict(locked), lock)
    check_versions(locked, {"python3": "3.13.5-1"}, lock)  # a lock entry no longer needed
    with pytest.raises(LockMismatchError, match=r"locked package libc6 2\.41-12 was not"):
        check_versions(locked, {**locked, "libc6": "2.41-13"}, lock)
    with pytest.raises(LockMismatchError, match=r"package zlib1g 1:1\.3 is not in"):
        check_versions(locked, {**locked, "zlib1g": "1:1.3"}, lock)
    assert apt_preferences(locked) == (
        "Package: libc6\nPin: version 2.41-12\nPin-Priority: 1001\n\n"
        "Package: python3\nPin: version 3.13.5-1\nPin-Priority: 1001\n\n"
    )


def test_a_build_dir_with_mounts_left_in_it_is_unmounted_before_removal(tmp_path: Path) -> None:
    # What a killed mmdebstrap leaves: file systems still mounted in its root. Removing
    # through them would delete what they show; here a tmpfs stands in for /proc or /dev.
    work = tmp_path / "aicert-env-x"
    (work / "rootfs" / "dev shm").mkdir(parents=True)
    (work / "rootfs" / "proc").mkdir()
    run(["mount", "-t", "tmpfs", "tmpfs", work / "rootfs" / "proc"])
    (work / "rootfs" / "proc" / "sys").mkdir()
    run(["mount", "-t", "tmpfs", "tmpfs", work / "rootfs" / "proc" / "sys"])
    run(["mount", "-t", "tmpfs", "tmpfs", work / "rootfs" / "dev shm"])
    try:
        points = mounts_below(work)
        assert points[0] == work / "rootfs" / "proc" / "sys", "the deepest first"
        assert set(points) == {
            work / "rootfs" / "proc" / "sys",
            work / "rootfs" / "proc",
            work / "rootfs" / "dev shm",
        }
        remove_build_dir(work)
        assert not work.exists()
        assert mounts_below(tmp_path) == []
    finally:
        for point in mounts_below(tmp_path):
            run(["umount", "--lazy", point])


def test_mmdebstrap_command(tmp_path: Path) -> None:
    definition = load_definition(DEMO)
    argv = mmdebstrap_argv(definition, tmp_path / "root", tmp_path / "cache", tmp_path / "p")
    assert argv[1:6] == [
        "--variant=essential",
        "--mode=root",
        "--format=directory",
        "--architectures=amd64",
        "--include=python3-numpy,python3-sklearn",
    ]
    assert f'--setup-hook=copy-in "{tmp_path / "p"}" /etc/apt/preferences.d/' in argv
    suite = argv.index("trixie")
    assert argv[suite + 1] == str(tmp_path / "root")
    assert argv[suite + 2 :] == list(definition.sources)


@pytest.fixture
def small_definition(tmp_path: Path) -> Path:
    return _definition(
        tmp_path,
        'suite = "trixie"\npackages = ["python3-minimal"]\nsource_date_epoch = 1735689600\n'
        'lock = "small.lock.json"\ncmd = ["python3"]\n',
    )


def _unpack(archive: Path, dest: Path) -> Path:
    """The layer of a freshly built (trusted) archive, extracted for crun."""
    with tarfile.open(archive) as outer:
        layers = [m for m in outer if m.size > 1 << 20]
        (layer,) = layers
        blob = outer.extractfile(layer)
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r|gz") as tar:
            tar.extractall(dest, filter="tar")
    return dest


@pytest.fixture
def cgroups() -> None:
    unified_cgroups()


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap --mode=root needs root")
def test_two_builds_give_the_same_manifest_digest_and_it_runs(
    tmp_path: Path, small_definition: Path, cgroups: None
) -> None:
    cache = Path(tempfile.gettempdir()) / "aicert-test-environment-debs"
    first = build_environment(
        load_definition(small_definition), tmp_path / "a.oci.tar", cache=cache, update_lock=True
    )
    assert (tmp_path / "small.lock.json").is_file()
    second = build_environment(
        load_definition(small_definition), tmp_path / "b.oci.tar", cache=cache
    )
    assert first.image.manifest.digest == second.image.manifest.digest
    assert (tmp_path / "a.oci.tar").read_bytes() == (tmp_path / "b.oci.tar").read_bytes()
    assert "python3-minimal" in second.packages
    if shutil.which("skopeo") is not None:  # an outside reader agrees on the digest
        archive = f"oci-archive:{tmp_path / 'a.oci.tar'}"
        out = run(["skopeo", "inspect", "--format", "{{.Digest}}", archive]).stdout
        assert out.decode().strip() == first.image.manifest.digest

    rootfs = _unpack(tmp_path / "a.oci.tar", tmp_path / "rootfs")
    scratch = tmp_path / "scratch"
    (scratch / "inputs" / "code").mkdir(parents=True)
    (scratch / "outputs").mkdir()
    for directory in (tmp_path, scratch, scratch / "inputs", scratch / "inputs" / "code"):
        directory.chmod(0o755)
    (scratch / "inputs" / "code" / "probe.py").write_text(
        "import os, sys\n"
        "open(os.environ['AICERT_OUTPUT'] + '/version', 'w').write(sys.version.split()[0])\n"
    )
    job = ContainerJob(
        SandboxSpec(
            command=("python3", "probe.py"),
            cwd=scratch / "inputs" / "code",
            read_only=(scratch,),
            output=scratch / "outputs" / "out",
            work=scratch / "work",
            env={"AICERT_INPUTS": str(scratch / "inputs")},
        ),
        EnvironmentRoot(rootfs=rootfs, env=("PATH=/usr/bin:/bin",)),
    )
    with (tmp_path / "log").open("wb") as log:
        status = run_container(job, log)
    assert status == 0, (tmp_path / "log").read_text()
    assert (scratch / "outputs" / "out" / "version").read_text().startswith("3.13.")  # trixie's
