"""Fixtures shared by the AWS tests: one moto server per session, emptied for each test.

Loaded for every test module through ``pytest_plugins`` in conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.builder.platforms.aws.clients import AwsClients
from aws_fake import CREDENTIALS, REGION, MotoAws, moto_server

MIB = 1 << 20


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoAws]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(moto_session: MotoAws, monkeypatch: pytest.MonkeyPatch) -> MotoAws:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    moto_session.reset()
    return moto_session


@pytest.fixture
def aws(moto: MotoAws) -> AwsClients:
    import boto3

    return AwsClients(REGION, boto3.session.Session(region_name=REGION), moto.options())


def aws_disk(path: Path, size: int = 3 * MIB + 1000, seed: bytes = b"aicert") -> Path:
    """A sparse raw disk: data in blocks 0 and 4, zeros between, a partial last block."""
    with path.open("wb") as f:
        f.truncate(size)
        f.write(seed * (MIB // len(seed)))
        f.seek(2 * MIB)
        f.write(b"\x5a" * 4096)
    return path
