"""A NitroTPM stand-in: a TCP proxy in front of a real swtpm that answers NitroTPM's
attestation command (TPM_CC 0x20000001) as NitroTPM does.

It listens like swtpm (data on port Q, control on Q+1; the TCTI is
``swtpm:host=127.0.0.1,port=Q``). The control channel is piped byte for byte; on the
data channel every command goes to swtpm and its answer back, except:

- NitroTPM's attestation command: the stand-in reads the CBOR request from the named
  NV index, reads swtpm's SHA-384 PCRs 0-23 with raw TPM2_PCR_Read, writes
  ``{"Attestation": {"document": COSE_Sign1}}`` (signed by a test Nitro PKI) or
  ``{"Error": "..."}`` back into the index, and answers success;
- NV indices in the user range larger than swtpm's TPM2_PT_NV_INDEX_MAX (libtpms caps
  them at 2048 bytes; NitroTPM takes the 8192 that vaportpm asks for): the stand-in holds
  such an index itself and answers its NV_DefineSpace, NV_Write, NV_Read and
  NV_UndefineSpace (password sessions) in the TPM's wire format.

Everything else (PCRs, keys, quotes) is the real swtpm's.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import cbor2
from aicert.builder.platforms.local.swtpm import Swtpm
from nitro_pki import NitroPki

NSM_COMMAND_CODE = 0x20000001
TPM_CC_NV_UNDEFINE_SPACE = 0x122
TPM_CC_NV_DEFINE_SPACE = 0x12A
TPM_CC_NV_WRITE = 0x137
TPM_CC_NV_READ = 0x14E
TPM_CC_GET_CAPABILITY = 0x17A
TPM_CC_PCR_READ = 0x17E
TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_RC_AUTH_FAIL = 0x98E
TPM_RC_NV_RANGE = 0x146
TPM_RC_NV_UNINITIALIZED = 0x14A
TPM_RC_NV_DEFINED = 0x14C
TPM_RC_HANDLE = 0x18B
TPM_PT_NV_INDEX_MAX = 0x117
TPM_CAP_TPM_PROPERTIES = 6
TPM_ALG_SHA384 = 0x000C
NV_USER_FIRST, NV_USER_LAST = 0x01000000, 0x01BFFFFF
MAX_FIELD = 512
# What vaportpm defines and NitroTPM accepts.
NV_INDEX_SIZE = 8192
_HEADER = struct.Struct(">HII")


class StandinError(Exception):
    """Something the stand-in cannot do; answered as NitroTPM's InternalError."""


@dataclass
class _HeldIndex:
    size: int
    auth: bytes
    data: bytearray = field(default_factory=bytearray)
    written: bool = False


@dataclass(frozen=True)
class _Command:
    code: int
    handles: tuple[int, ...]
    password: bytes
    params: bytes


class NitroStandin:
    """The proxy; a context manager (``with NitroStandin(swtpm_port) as nitro: nitro.tcti``)."""

    def __init__(
        self, swtpm_port: int, pki: NitroPki | None = None, *, answers_attestation: bool = True
    ) -> None:
        """``answers_attestation=False``: forward the attestation command to swtpm too
        (a TPM with large NV indices that is no NitroTPM)."""
        self.swtpm_port = swtpm_port
        self.answers_attestation = answers_attestation
        self.pki = pki or NitroPki.generate()
        self.held: dict[int, _HeldIndex] = {}
        self.requests: list[dict[str, Any]] = []
        self.documents: list[bytes] = []
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._open: list[socket.socket] = []
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def __enter__(self) -> NitroStandin:
        data, ctrl = _listen_pair()
        self.port = data.getsockname()[1]
        self._listeners = [data, ctrl]
        threading.Thread(target=self._accept, args=(data, self._serve_data), daemon=True).start()
        threading.Thread(target=self._accept, args=(ctrl, self._serve_ctrl), daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sock in [*self._listeners, *self._open]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket, serve: Any) -> None:
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return
            self._open.append(client)
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    def _serve_ctrl(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.swtpm_port + 1))
        self._open.append(upstream)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while chunk := source.recv(65536):
                    sink.sendall(chunk)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def _serve_data(self, client: socket.socket) -> None:
        with (
            contextlib.closing(client),
            socket.create_connection(("127.0.0.1", self.swtpm_port)) as upstream,
        ):
            self._open.append(upstream)
            index_max = _nv_index_max(upstream)
            while (command := _read_message(client)) is not None:
                client.sendall(self._handle(command, upstream, index_max))

    # -- commands -------------------------------------------------------------------------

    def _handle(self, command: bytes, upstream: socket.socket, index_max: int) -> bytes:
        tag, _size, code = _HEADER.unpack_from(command)
        if code == NSM_COMMAND_CODE and self.answers_attestation:
            return self._attest(_parse(command, 2), upstream)
        if tag == TPM_ST_SESSIONS and code == TPM_CC_NV_DEFINE_SPACE:
            parsed = _parse(command, 1)
            public = _define_space_public(parsed.params)
            if NV_USER_FIRST <= public[0] <= NV_USER_LAST and public[1] > index_max:
                return self._define(*public)
        if tag == TPM_ST_SESSIONS and code in (TPM_CC_NV_WRITE, TPM_CC_NV_READ):
            parsed = _parse(command, 2)
            if parsed.handles[1] in self.held:
                return self._read_write(parsed)
        if tag == TPM_ST_SESSIONS and code == TPM_CC_NV_UNDEFINE_SPACE:
            parsed = _parse(command, 2)
            with self._lock:
                if self.held.pop(parsed.handles[1], None) is not None:
                    return _success()
        response = _transact(upstream, command)
        if code == TPM_CC_GET_CAPABILITY:
            # The stand-in's NV holds what swtpm's cannot: report its own limit.
            response = _with_nv_index_max(response, max(index_max, NV_INDEX_SIZE))
        return response

    def _define(self, index: int, size: int, auth: bytes) -> bytes:
        with self._lock:
            if index in self.held:
                return _failure(TPM_RC_NV_DEFINED)
            self.held[index] = _HeldIndex(size, auth, bytearray(size))
        return _success()

    def _read_write(self, command: _Command) -> bytes:
        with self._lock:
            held = self.held[command.handles[1]]
            if command.handles[0] == command.handles[1] and command.password != held.auth:
                return _failure(TPM_RC_AUTH_FAIL)
            if command.code == TPM_CC_NV_WRITE:
                (length,) = struct.unpack_from(">H", command.params)
                data = command.params[2 : 2 + length]
                (offset,) = struct.unpack_from(">H", command.params, 2 + length)
                if offset + len(data) > held.size:
                    return _failure(TPM_RC_NV_RANGE)
                held.data[offset : offset + len(data)] = data
                held.written = True
                return _success()
            size, offset = struct.unpack_from(">HH", command.params)
            if not held.written:
                return _failure(TPM_RC_NV_UNINITIALIZED)
            if offset + size > held.size:
                return _failure(TPM_RC_NV_RANGE)
            return _success(struct.pack(">H", size) + bytes(held.data[offset : offset + size]))

    def _attest(self, command: _Command, upstream: socket.socket) -> bytes:
        """NitroTPM's attestation: request from the index, answer into it."""
        with self._lock:
            held = self.held.get(command.handles[1])
        if held is None or not held.written:
            # A real NitroTPM would read a swtpm-sized index too; the agent never uses one.
            return _failure(TPM_RC_HANDLE)
        answer = self._answer(bytes(held.data), upstream)
        encoded = cbor2.dumps(answer)
        if len(encoded) > held.size:
            encoded = cbor2.dumps({"Error": "BufferTooSmall"})
        with self._lock:
            held.data[:] = encoded + bytes(held.size - len(encoded))
        return _success()

    def _answer(self, raw: bytes, upstream: socket.socket) -> dict[str, Any]:
        try:
            request = cbor2.CBORDecoder(io.BytesIO(raw)).decode()
        except (cbor2.CBORDecodeError, ValueError):
            return {"Error": "InvalidArgument"}
        fields = request.get("Attestation") if isinstance(request, dict) else None
        if (
            not isinstance(fields, dict)
            or set(fields) != {"user_data", "nonce", "public_key"}
            or not all(v is None or isinstance(v, bytes) for v in fields.values())
        ):
            return {"Error": "InvalidArgument"}
        self.requests.append(fields)
        if any(v is not None and len(v) > MAX_FIELD for v in fields.values()):
            return {"Error": "InputTooLarge"}
        try:
            # On the client's own connection: swtpm serves one at a time.
            pcrs = read_sha384_pcrs(upstream)
        except StandinError:
            return {"Error": "InternalError"}
        document = self.pki.document(
            pcrs,
            user_data=fields["user_data"],
            nonce=fields["nonce"],
            public_key=fields["public_key"],
        )
        self.documents.append(document)
        return {"Attestation": {"document": document}}


# -- raw TPM wire ---------------------------------------------------------------------------


def read_sha384_pcrs(upstream: socket.socket) -> dict[int, bytes]:
    """SHA-384 PCRs 0-23 with raw TPM2_PCR_Read (the TPM answers at most 8 a call)."""
    values: dict[int, bytes] = {}
    for first in range(0, 24, 8):
        select = bytearray(3)
        for pcr in range(first, first + 8):
            select[pcr // 8] |= 1 << (pcr % 8)
        body = struct.pack(">IHB", 1, TPM_ALG_SHA384, 3) + bytes(select)
        command = _HEADER.pack(TPM_ST_NO_SESSIONS, 10 + len(body), TPM_CC_PCR_READ) + body
        response = _transact(upstream, command)
        _tag, _size, rc = _HEADER.unpack_from(response)
        if rc != 0:
            raise StandinError(f"PCR_Read failed: 0x{rc:x}")
        pos = 14  # header, pcrUpdateCounter
        (banks,) = struct.unpack_from(">I", response, pos)
        pos += 4
        returned: list[int] = []
        for _ in range(banks):
            alg, count = struct.unpack_from(">HB", response, pos)
            bits = response[pos + 3 : pos + 3 + count]
            pos += 3 + count
            if alg == TPM_ALG_SHA384:
                returned += [i for i in range(count * 8) if bits[i // 8] & (1 << (i % 8))]
        (digests,) = struct.unpack_from(">I", response, pos)
        pos += 4
        if not returned or digests != len(returned):
            raise StandinError("swtpm has no SHA-384 PCR bank")
        for pcr in returned:
            (length,) = struct.unpack_from(">H", response, pos)
            values[pcr] = response[pos + 2 : pos + 2 + length]
            pos += 2 + length
    return values


def _nv_index_max(upstream: socket.socket) -> int:
    body = struct.pack(">III", TPM_CAP_TPM_PROPERTIES, TPM_PT_NV_INDEX_MAX, 1)
    command = _HEADER.pack(TPM_ST_NO_SESSIONS, 10 + len(body), TPM_CC_GET_CAPABILITY) + body
    response = _transact(upstream, command)
    # header, moreData, capability, count, then (property, value)
    prop, value = struct.unpack_from(">II", response, 10 + 1 + 4 + 4)
    if prop != TPM_PT_NV_INDEX_MAX:
        raise StandinError("swtpm did not report TPM2_PT_NV_INDEX_MAX")
    return int(value)


def _with_nv_index_max(response: bytes, value: int) -> bytes:
    """A GetCapability(TPM_PROPERTIES) answer with TPM2_PT_NV_INDEX_MAX set to ``value``."""
    _tag, _size, rc = _HEADER.unpack_from(response)
    if rc != 0 or len(response) < 19:
        return response
    (capability, count) = struct.unpack_from(">II", response, 11)
    if capability != TPM_CAP_TPM_PROPERTIES:
        return response
    patched = bytearray(response)
    for i in range(count):
        pos = 19 + 8 * i
        (prop,) = struct.unpack_from(">I", response, pos)
        if prop == TPM_PT_NV_INDEX_MAX:
            struct.pack_into(">I", patched, pos + 4, value)
    return bytes(patched)


def _parse(command: bytes, handle_count: int) -> _Command:
    tag, _size, code = _HEADER.unpack_from(command)
    pos = 10
    handles = struct.unpack_from(f">{handle_count}I", command, pos)
    pos += 4 * handle_count
    password = b""
    if tag == TPM_ST_SESSIONS:
        (auth_size,) = struct.unpack_from(">I", command, pos)
        area = command[pos + 4 : pos + 4 + auth_size]
        pos += 4 + auth_size
        # TPMS_AUTH_COMMAND: sessionHandle, nonce, attributes, hmac (the password).
        (nonce_size,) = struct.unpack_from(">H", area, 4)
        (hmac_size,) = struct.unpack_from(">H", area, 6 + nonce_size + 1)
        password = area[6 + nonce_size + 3 : 6 + nonce_size + 3 + hmac_size]
    return _Command(code, handles, password, command[pos:])


def _define_space_public(params: bytes) -> tuple[int, int, bytes]:
    """nvIndex, dataSize and auth value of NV_DefineSpace's parameters."""
    (auth_size,) = struct.unpack_from(">H", params)
    auth = params[2 : 2 + auth_size]
    pos = 2 + auth_size + 2  # TPM2B_NV_PUBLIC's size
    index, _name_alg, _attributes, policy_size = struct.unpack_from(">IHIH", params, pos)
    (size,) = struct.unpack_from(">H", params, pos + 12 + policy_size)
    return index, size, auth


def _success(params: bytes = b"") -> bytes:
    """A successful answer to a command with one password session: parameterSize,
    parameters, then TPMS_AUTH_RESPONSE (empty nonce, continueSession, empty hmac)."""
    body = struct.pack(">I", len(params)) + params + struct.pack(">HBH", 0, 1, 0)
    return _HEADER.pack(TPM_ST_SESSIONS, 10 + len(body), 0) + body


def _failure(rc: int) -> bytes:
    return _HEADER.pack(TPM_ST_NO_SESSIONS, 10, rc)


def _transact(upstream: socket.socket, command: bytes) -> bytes:
    upstream.sendall(command)
    response = _read_message(upstream)
    if response is None:
        raise StandinError("swtpm closed the connection")
    return response


def _read_message(sock: socket.socket) -> bytes | None:
    """One TPM command or response (its header gives its size); None at end of stream."""
    header = _read_exactly(sock, 10)
    if header is None:
        return None
    _tag, size, _code = _HEADER.unpack(header)
    rest = _read_exactly(sock, size - 10) if size > 10 else b""
    return None if rest is None else header + rest


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _listen_pair() -> tuple[socket.socket, socket.socket]:
    """Listeners on two adjacent free ports: the swtpm TCTI finds control at data + 1."""
    for _ in range(50):
        data = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        data.bind(("127.0.0.1", 0))
        port = data.getsockname()[1]
        ctrl = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            ctrl.bind(("127.0.0.1", port + 1))
        except OSError:
            data.close()
            ctrl.close()
            continue
        data.listen(4)
        ctrl.listen(4)
        return data, ctrl
    raise StandinError("no two adjacent free ports for the NitroTPM stand-in")


def standin_for(swtpm: Swtpm, *, answers_attestation: bool = True) -> NitroStandin:
    """A stand-in in front of a running TCP-mode swtpm (start it with ``with``)."""
    host, _, port = swtpm.tcti.rpartition("port=")
    if not host.startswith("swtpm:host=127.0.0.1") or not port.isdigit():
        raise StandinError(f"not a TCP swtpm on 127.0.0.1: {swtpm.tcti}")
    return NitroStandin(int(port), answers_attestation=answers_attestation)
