"""The relay QEMU starts per VM connection to the test registry: a real docker-registry,
the relay as QEMU runs it (a subprocess with the connection on stdin and stdout)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.builder.platforms.local.guest_relay import (
    REGISTRY_ADDRESS,
    REGISTRY_PORT,
    registry_forward,
)
from oci_support import Registry, file, layer_tar, make_image, running_registry, sha256


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def _through_relay(port: int, request: bytes) -> bytes:
    vm_side, relay_side = socket.socketpair()
    with vm_side, relay_side:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aicert.builder.platforms.local.guest_relay", str(port)],
            stdin=relay_side.fileno(),
            stdout=relay_side.fileno(),
        )
        relay_side.close()
        vm_side.sendall(request)
        vm_side.shutdown(socket.SHUT_WR)
        answer = bytearray()
        while data := vm_side.recv(1 << 16):
            answer += data
        assert proc.wait(timeout=30) == 0
    return bytes(answer)


def test_a_blob_arrives_whole_through_the_relay(registry: Registry) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    image = make_image([layer_tar([file("big", payload)])], compress=False)
    registry.push("relay/test", image)
    digest = image.layer_digests[0]
    request = f"GET /v2/relay/test/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    answer = _through_relay(registry.port, request.encode() + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert sha256(body) == digest


def test_the_forward_rule_names_the_address_and_the_relay(tmp_path: Path) -> None:
    rule = registry_forward(4242)
    assert rule.startswith(f"tcp:{REGISTRY_ADDRESS}:{REGISTRY_PORT}-cmd:")
    assert rule.endswith("-m aicert.builder.platforms.local.guest_relay 4242")
    assert "," not in rule  # one item of QEMU's -netdev option list


def test_no_service_is_a_one_line_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "aicert.builder.platforms.local.guest_relay", str(port)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.decode().strip().count("\n") == 0
    assert f"127.0.0.1:{port}" in proc.stderr.decode()
