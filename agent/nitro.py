"""A NitroTPM attestation document, requested through NitroTPM's vendor command.

AWS signs no AK certificate; what it signs is the attestation document (COSE_Sign1,
ES384, AWS Nitro PKI) holding the NitroTPM's SHA-384 PCRs and three caller fields.
Inside the instance it is asked for as the open-source client vaportpm does:

1. define a scratch NV index in the user range (owner authorization, empty auth value);
2. write the CBOR request ``{"Attestation": {"user_data", "nonce", "public_key"}}``;
3. send vendor command 0x20000001 naming that index;
4. read the index back: the CBOR answer (``{"Attestation": {"document": …}}`` or
   ``{"Error": "…"}``) followed by padding;
5. undefine the index, whatever happened.

The command goes raw through the TCTI underneath the ESAPI: ESAPI knows no vendor
commands. A TPM that is not a NitroTPM answers TPM_RC_COMMAND_CODE.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aicert.verifier.aws.cbor import decode_prefix, head
from aicert.verifier.errors import FormatError, TpmError
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

if TYPE_CHECKING:
    from aicert.agent.tpm import AgentTpm

NSM_COMMAND_CODE = 0x20000001
TPM_ST_SESSIONS = 0x8002
TPM_RS_PW = 0x40000009
TPM_RC_COMMAND_CODE = 0x143
_RC_CODE_MASK = 0xFFFF
NV_USER_FIRST = 0x01000000
NV_USER_LAST = 0x01BFFFFF
# vaportpm's size for the request/response index: the answer (a document with a
# certificate chain) fits, and NitroTPM accepts it.
NV_INDEX_SIZE = 8192
# AWS's limits on the caller fields of a NitroTPM attestation document.
MAX_USER_DATA = 512
MAX_NONCE = 512
NSM_ERRORS = frozenset(
    {
        "InvalidArgument",
        "InvalidIndex",
        "InvalidResponse",
        "ReadOnlyIndex",
        "InvalidOperation",
        "BufferTooSmall",
        "InputTooLarge",
        "InternalError",
    }
)
_HEADER = struct.Struct(">HII")
_T = TypeVar("_T")
_NV_ATTRIBUTES = TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD


def _not_nitro(why: str) -> TpmError:
    return TpmError(
        f"the TPM holds no AK certificate and is not a NitroTPM ({why}); is this a"
        " Trusted Launch or Shielded VM with its vTPM enabled, or an EC2 instance with"
        " NitroTPM?"
    )


def request_attestation_document(tpm: AgentTpm, *, user_data: bytes, nonce: bytes) -> bytes:
    """The COSE_Sign1 attestation document NitroTPM signs over ``user_data`` and ``nonce``
    (each at most 512 bytes); ``public_key`` is left null."""
    if len(user_data) > MAX_USER_DATA:
        raise TpmError(
            f"the attestation document's user_data is {len(user_data)} bytes; NitroTPM takes"
            f" at most {MAX_USER_DATA}"
        )
    if len(nonce) > MAX_NONCE:
        raise TpmError(
            f"the attestation document's nonce is {len(nonce)} bytes; NitroTPM takes at"
            f" most {MAX_NONCE}"
        )
    request = encode_request(user_data=user_data, nonce=nonce, public_key=None)
    # A TPM that cannot hold the answer's index is no NitroTPM: say so before defining it.
    index_max = tpm.nv_index_max()
    if index_max < NV_INDEX_SIZE:
        raise _not_nitro(
            f"its NV indices hold at most {index_max} bytes; NitroTPM's attestation answer"
            f" takes {NV_INDEX_SIZE}"
        )
    esapi = tpm.esapi
    nv_index = _free_index(tpm.nv_indices())
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=nv_index,
            nameAlg=TPM2_ALG.SHA256,
            attributes=_NV_ATTRIBUTES,
            dataSize=NV_INDEX_SIZE,
        )
    )
    index = _tss(
        "NV_DefineSpace of the attestation request index",
        esapi.nv_define_space,
        None,
        public,
        ESYS_TR.OWNER,
    )
    failed = True
    try:
        chunk = tpm.nv_buffer_max()
        for offset in range(0, len(request), chunk):
            _tss(
                "NV_Write of the attestation request",
                esapi.nv_write,
                index,
                request[offset : offset + chunk],
                offset,
                auth_handle=index,
            )
        _send_vendor_command(tpm, nv_index)
        answer = bytearray()
        while len(answer) < NV_INDEX_SIZE:
            part = _tss(
                "NV_Read of the attestation answer",
                esapi.nv_read,
                index,
                min(chunk, NV_INDEX_SIZE - len(answer)),
                len(answer),
                auth_handle=index,
            )
            if not bytes(part):
                raise TpmError("TPM2_NV_Read of the attestation answer returned no data")
            answer += bytes(part)
        failed = False
    finally:
        # The index is scratch space: never leave it behind, even after a failure.
        try:
            esapi.nv_undefine_space(index, ESYS_TR.OWNER)
        except TSS2_Exception as exc:
            # After another failure that one says more: let it go on, not this one.
            if not failed:
                raise TpmError(
                    f"TPM2_NV_UndefineSpace of the attestation index 0x{nv_index:08x} failed: {exc}"
                ) from None
    return parse_answer(bytes(answer))


def encode_request(
    *, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> bytes:
    """The CBOR of serde's ``Request::Attestation{user_data, nonce, public_key}``: a map
    of one text key to a map of three text keys, each a byte string or null."""
    fields = (("user_data", user_data), ("nonce", nonce), ("public_key", public_key))
    body = head(5, len(fields)) + b"".join(
        _text(name) + (b"\xf6" if value is None else head(2, len(value)) + value)
        for name, value in fields
    )
    return head(5, 1) + _text("Attestation") + body


def vendor_command(nv_index: int) -> bytes:
    """NitroTPM's attestation command: the index as authHandle and as nvIndex, a password
    session with an empty password, no parameters."""
    handles = struct.pack(">II", nv_index, nv_index)
    # TPMS_AUTH_COMMAND: sessionHandle, nonce (empty), sessionAttributes, hmac (empty).
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    body = handles + struct.pack(">I", len(auth)) + auth
    return _HEADER.pack(TPM_ST_SESSIONS, _HEADER.size + len(body), NSM_COMMAND_CODE) + body


def parse_answer(data: bytes) -> bytes:
    """The document from the index's content: the first CBOR item, the rest padding."""
    try:
        value, _used = decode_prefix(data, "the NitroTPM attestation answer")
    except FormatError as exc:
        raise TpmError(f"{exc.message}; the TPM's answer is not NitroTPM's") from None
    if isinstance(value, dict) and len(value) == 1:
        if "Error" in value:
            code = value["Error"]
            if isinstance(code, str) and code in NSM_ERRORS:
                raise TpmError(f"NitroTPM refused the attestation document request: {code}")
            raise TpmError(f"NitroTPM answered an unknown error: {code!r:.80}")
        inner = value.get("Attestation")
        if isinstance(inner, dict) and len(inner) == 1:
            document = inner.get("document")
            if isinstance(document, bytes) and document:
                return document
    raise TpmError(
        "the NitroTPM attestation answer is neither {Attestation: {document}} nor {Error}"
    )


def _send_vendor_command(tpm: AgentTpm, nv_index: int) -> None:
    tcti = tpm.esapi.tcti
    if tcti is None:
        raise TpmError("the TPM connection has no TCTI to send NitroTPM's command through")
    try:
        tcti.transmit(vendor_command(nv_index))
        response = bytes(tcti.receive())
    except TSS2_Exception as exc:
        raise TpmError(f"NitroTPM's attestation command failed to reach the TPM: {exc}") from None
    check_vendor_response(response)


def check_vendor_response(response: bytes) -> None:
    """Raise unless ``response`` is a success answer to the attestation command (only its
    header matters: the answer itself is in the NV index)."""
    if len(response) < _HEADER.size:
        raise TpmError(f"the TPM answered NitroTPM's command with {len(response)} bytes")
    _tag, size, rc = _HEADER.unpack_from(response)
    if size != len(response):
        raise TpmError(
            f"the TPM's answer to NitroTPM's command says {size} bytes and has {len(response)}"
        )
    # Through /dev/tpmrm0 the kernel answers a command the TPM does not list itself,
    # with its resource manager's layer (0x000b0000) above the code.
    if rc & _RC_CODE_MASK == TPM_RC_COMMAND_CODE:
        raise _not_nitro(f"it does not know the attestation command 0x{NSM_COMMAND_CODE:08x}")
    if rc != 0:
        raise TpmError(f"NitroTPM's attestation command failed with TPM response code 0x{rc:03x}")


def _free_index(used: set[int]) -> int:
    """A user-range NV index no one holds; random, so two clients rarely collide."""
    for _ in range(64):
        candidate = NV_USER_FIRST + secrets.randbelow(NV_USER_LAST - NV_USER_FIRST + 1)
        if candidate not in used:
            return candidate
    raise TpmError("found no free NV index in 0x01000000..0x01bfffff for the attestation request")


def _tss(what: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    try:
        return function(*args, **kwargs)
    except TSS2_Exception as exc:
        raise TpmError(f"TPM2_{what} failed: {exc}") from None


def _text(value: str) -> bytes:
    raw = value.encode()
    return head(3, len(raw)) + raw
