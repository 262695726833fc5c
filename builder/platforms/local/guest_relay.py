"""Relay one connection from the VM to a service on the host's loopback.

QEMU starts ``python3 -m aicert.builder.platforms.local.guest_relay PORT`` for each
connection the VM opens to a forwarded address (``guestfwd=tcp:ADDR:GPORT-cmd:...``),
with the connection on stdin and stdout; the relay connects to ``127.0.0.1:PORT`` and
copies bytes both ways until both sides are done. The local platform reaches a test OCI
registry this way (:data:`REGISTRY_ADDRESS`) while the VM's user network stays
``restrict=on``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from typing import Final

# Inside QEMU's user network, next to the local PKI responder's 10.0.2.100.
REGISTRY_ADDRESS: Final = "10.0.2.101"
REGISTRY_PORT: Final = 5000
_CHUNK: Final = 1 << 16


def registry_forward(host_port: int) -> str:
    """The ``guestfwd`` rule that makes ``REGISTRY_ADDRESS:REGISTRY_PORT`` in the VM the
    service on the host's ``127.0.0.1:host_port``."""
    command = f"{sys.executable} -m aicert.builder.platforms.local.guest_relay {host_port}"
    return f"tcp:{REGISTRY_ADDRESS}:{REGISTRY_PORT}-cmd:{command}"


def _copy_in(source: int, sock: socket.socket) -> None:
    """The VM's bytes (``source``) to the host service; half-close at the VM's end."""
    with contextlib.suppress(OSError):
        while data := os.read(source, _CHUNK):
            sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def relay(port: int, source: int = 0, sink: int = 1) -> None:
    """Copy between the fds ``source``/``sink`` (the VM) and ``127.0.0.1:port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.settimeout(None)
        inbound = threading.Thread(target=_copy_in, args=(source, sock), daemon=True)
        inbound.start()
        with contextlib.suppress(OSError):  # either side gone: the connection is over
            while data := sock.recv(_CHUNK):
                view = memoryview(data)
                while view:
                    view = view[os.write(sink, view) :]


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python3 -m aicert.builder.platforms.local.guest_relay PORT")
    try:
        relay(int(sys.argv[1]))
    except OSError as exc:
        sys.exit(f"guest relay to 127.0.0.1:{sys.argv[1]}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
