"""Answer one HTTP request with one certificate: the local platform's stand-in for a CA's
AIA download point (``http://10.0.2.100/...`` inside QEMU's user network).

QEMU starts ``python3 -m aicert.builder.platforms.local.pki_responder CERT`` for each
connection the VM opens to that address (``guestfwd=...-cmd:``), with the connection on
stdin and stdout. The request is read up to its blank line before the answer is written,
so the VM never sends into a closed connection. Whatever the path, the answer is CERT (DER).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

MAX_REQUEST_LINES = 100


def respond(request: BinaryIO, response: BinaryIO, certificate: bytes) -> None:
    for _ in range(MAX_REQUEST_LINES):
        line = request.readline(8192)
        if line in (b"", b"\r\n", b"\n"):
            break
    response.write(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/pkix-cert\r\n"
        + f"Content-Length: {len(certificate)}\r\nConnection: close\r\n\r\n".encode()
        + certificate
    )
    response.flush()


def main() -> None:
    respond(sys.stdin.buffer, sys.stdout.buffer, Path(sys.argv[1]).read_bytes())


if __name__ == "__main__":
    main()
