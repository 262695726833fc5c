"""Quote signature and PCR digest checks, against real TPM output and forged input."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import (
    AicertError,
    FormatError,
    PcrDigestError,
    QuoteSignatureError,
    QuoteStructureError,
    VerificationError,
)
from aicert.verifier.tpm.pcr import SHA1, SHA256, SHA384, extend
from aicert.verifier.tpm.quote import pcr_digest, verify_pcr_digest, verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    PcrSelection,
    parse_attest,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from tpm_wire_builders import load_gcp_vector, quote_attest, sign, tpmt_public

from aicert.process import run

GCP = load_gcp_vector()
GCP_AK = parse_tpmt_public(GCP.ak_public)


# --------------------------------------------------------------------------- GCP vector


def test_gcp_quote_verifies_with_sha1_allowed() -> None:
    attest = verify_quote_signature(GCP.quote, GCP.signature, GCP_AK, allow_sha1=True)
    assert attest.pcr_digest.hex().startswith("a610f27b")


def test_gcp_quote_is_refused_without_sha1_opt_in() -> None:
    with pytest.raises(QuoteSignatureError, match="sha1"):
        verify_quote_signature(GCP.quote, GCP.signature, GCP_AK)


def test_tpm2_checkquote_accepts_the_gcp_vector_too(tmp_path: Path) -> None:
    # The outside oracle, fed the key as this module converts it.
    pem = GCP_AK.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ak.pem").write_bytes(pem)
    (tmp_path / "quote").write_bytes(GCP.quote)
    (tmp_path / "sig").write_bytes(GCP.signature)
    argv = ["tpm2_checkquote", "-u", "ak.pem", "-m", "quote", "-s", "sig", "-g", "sha1"]
    run(argv, cwd=tmp_path)
    (tmp_path / "quote").write_bytes(_flip(GCP.quote, 40))
    assert run(argv, cwd=tmp_path, check=False).returncode != 0


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("position", range(len(GCP.quote)))
def test_gcp_any_flipped_attest_byte_fails(position: int) -> None:
    # A flip that breaks the structure is malformed input; any other fails the signature.
    with pytest.raises((QuoteSignatureError, QuoteStructureError, FormatError)):
        verify_quote_signature(_flip(GCP.quote, position), GCP.signature, GCP_AK, allow_sha1=True)


def test_truncated_quote_is_malformed_not_a_bad_signature() -> None:
    for end in range(len(GCP.quote)):
        with pytest.raises(FormatError):
            verify_quote_signature(GCP.quote[:end], GCP.signature, GCP_AK, allow_sha1=True)


def test_gcp_any_flipped_signature_byte_fails() -> None:
    for position in range(len(GCP.signature)):
        with pytest.raises(QuoteSignatureError):
            verify_quote_signature(
                GCP.quote, _flip(GCP.signature, position), GCP_AK, allow_sha1=True
            )


def test_gcp_pcr_digest_is_sha1_over_the_log_pcrs_in_index_order() -> None:
    attest = parse_attest(GCP.quote)
    by_hand = hashlib.sha1(b"".join(GCP.pcrs[i] for i in range(24))).digest()  # noqa: S324
    assert by_hand == attest.pcr_digest
    assert pcr_digest(SHA1, attest.pcr_selection, GCP.pcrs) == attest.pcr_digest
    verify_pcr_digest(attest, GCP.pcrs)
    verify_pcr_digest(attest, GCP.pcrs, alg=SHA1)


def test_gcp_pcr_digest_mismatches() -> None:
    attest = parse_attest(GCP.quote)
    changed = {**GCP.pcrs, 7: bytes(20)}
    with pytest.raises(PcrDigestError, match="do not hash"):
        verify_pcr_digest(attest, changed)
    missing = {i: v for i, v in GCP.pcrs.items() if i != 0}
    with pytest.raises(PcrDigestError, match="PCR 0"):
        verify_pcr_digest(attest, missing)
    with pytest.raises(PcrDigestError, match="not a sha256 digest"):
        verify_pcr_digest(attest, GCP.pcrs, alg=SHA256)
    with pytest.raises(PcrDigestError, match="not a sha1 digest"):
        verify_pcr_digest(attest, {**GCP.pcrs, 3: bytes(32)})


def test_gcp_creation_record_is_signed_but_is_not_a_quote() -> None:
    with pytest.raises(QuoteStructureError, match="TPM_ST_ATTEST_CREATION"):
        verify_quote_signature(
            GCP.create_attestation, GCP.create_signature, GCP_AK, allow_sha1=True
        )


# --------------------------------------------------------------------------- key policy


SELECTION = PcrSelection.of({SHA256: [0, 1, 15]})
PCRS = {0: bytes(32), 1: bytes(32), 15: extend(SHA256, bytes(32), b"\xaa" * 32)}
DIGEST = pcr_digest(SHA256, SELECTION, PCRS)


def _software_ak(kind: str) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, int]:
    if kind == "ecc":
        return ec.generate_private_key(ec.SECP256R1()), ALG_ECDSA
    scheme = ALG_RSAPSS if kind == "pss" else ALG_RSASSA
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), scheme


@pytest.mark.parametrize("kind", ["rsassa", "pss", "ecc"])
def test_software_signed_quote_verifies_only_for_a_restricted_fixed_key(kind: str) -> None:
    key, scheme = _software_ak(kind)
    attest = quote_attest(SELECTION, DIGEST, extra_data=b"n" * 32)
    signature = sign(key, attest, scheme=scheme)
    ak = parse_tpmt_public(tpmt_public(key.public_key(), scheme=scheme))
    assert verify_quote_signature(attest, signature, ak).extra_data == b"n" * 32
    attributes = ak.object_attributes
    unrestricted = dataclasses.replace(ak, object_attributes=attributes & ~ATTR_RESTRICTED)
    with pytest.raises(QuoteSignatureError, match="not a restricted signing key"):
        verify_quote_signature(attest, signature, unrestricted)
    movable = dataclasses.replace(ak, object_attributes=attributes & ~ATTR_FIXED_TPM)
    with pytest.raises(QuoteSignatureError, match="fixedTPM"):
        verify_quote_signature(attest, signature, movable)


def test_signature_must_use_the_keys_scheme() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attest = quote_attest(SELECTION, DIGEST)
    ak = parse_tpmt_public(tpmt_public(key.public_key(), scheme=ALG_RSASSA))
    with pytest.raises(QuoteSignatureError, match="scheme is RSASSA/sha256"):
        verify_quote_signature(attest, sign(key, attest, scheme=ALG_RSAPSS), ak)
    with pytest.raises(QuoteSignatureError, match="scheme is RSASSA/sha256"):
        verify_quote_signature(attest, sign(key, attest, scheme=ALG_RSASSA, hash_alg=SHA384), ak)
    any_scheme = parse_tpmt_public(tpmt_public(key.public_key()))
    verify_quote_signature(attest, sign(key, attest, scheme=ALG_RSAPSS), any_scheme)
    ecc = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(QuoteSignatureError, match="cannot come from an RSA key"):
        verify_quote_signature(attest, sign(ecc, attest, scheme=ALG_ECDSA), any_scheme)


def test_small_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    attest = quote_attest(SELECTION, DIGEST)
    ak = parse_tpmt_public(tpmt_public(key.public_key()))
    with pytest.raises(QuoteSignatureError, match="RSA-1024"):
        verify_quote_signature(attest, sign(key, attest, scheme=ALG_RSASSA), ak)


def test_signed_forgery_without_tpm_magic_is_refused() -> None:
    # Only reachable with a key that signs outside data; shows the magic is checked anyway.
    key = ec.generate_private_key(ec.SECP256R1())
    ak = parse_tpmt_public(tpmt_public(key.public_key()))
    forged = quote_attest(SELECTION, DIGEST, magic=0x12345678)
    with pytest.raises(QuoteStructureError, match="magic"):
        verify_quote_signature(forged, sign(key, forged, scheme=ALG_ECDSA), ak)


def test_pcr_values_outside_the_quote_are_refused() -> None:
    attest = parse_attest(quote_attest(SELECTION, DIGEST))
    verify_pcr_digest(attest, PCRS)
    with pytest.raises(PcrDigestError, match=r"\[7\]"):
        verify_pcr_digest(attest, {**PCRS, 7: bytes(32)})


def test_pcr_digest_of_two_banks_is_refused() -> None:
    two = PcrSelection.of({SHA256: [0], SHA1: [0]})
    with pytest.raises(PcrDigestError, match="2 PCR banks"):
        pcr_digest(SHA256, two, {0: bytes(32)})


@given(
    st.sampled_from(["attest", "signature"]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_mutated_quotes_raise_only_project_errors(which: str, edits: list[tuple[int, int]]) -> None:
    attest, signature = bytearray(GCP.quote), bytearray(GCP.signature)
    target = attest if which == "attest" else signature
    for position, value in edits:
        target[position % len(target)] = value
    try:
        verify_quote_signature(bytes(attest), bytes(signature), GCP_AK, allow_sha1=True)
    except (FormatError, VerificationError):
        return
    # Only an edit that changed nothing may pass.
    assert bytes(attest) == GCP.quote
    assert bytes(signature) == GCP.signature


@given(st.binary(max_size=400), st.binary(max_size=300))
def test_random_quotes_raise_only_project_errors(attest: bytes, signature: bytes) -> None:
    with contextlib.suppress(AicertError):
        verify_quote_signature(attest, signature, GCP_AK, allow_sha1=True)
        pytest.fail("random bytes verified")


# --------------------------------------------------------------------------- swtpm

AK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
# name: (tpm2_create -G, tpm2_quote --scheme, tpm2_quote -g)
SWTPM_KEYS = {
    "rsa-rsassa": ("rsa2048:rsassa-sha256:null", "rsassa", "sha256"),
    "rsa-pss": ("rsa2048:rsapss-sha256:null", "rsapss", "sha256"),
    "ecc-p256": ("ecc256:ecdsa-sha256:null", "ecdsa", "sha256"),
    "ecc-p384": ("ecc384:ecdsa-sha384:null", "ecdsa", "sha384"),
}
PCR15_EVENT = hashlib.sha256(b"aicert test event").digest()


@dataclasses.dataclass(frozen=True)
class Tools:
    """tpm2-tools against one swtpm, run in a work directory."""

    tcti: str
    workdir: Path

    def tpm2(self, tool: str, *args: str) -> None:
        run([f"tpm2_{tool}", *args], cwd=self.workdir, env={"TPM2TOOLS_TCTI": self.tcti})

    def flush_transient(self) -> None:
        # Without a resource manager, loaded objects stay in the TPM's few slots.
        self.tpm2("flushcontext", "-t")


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tools]:
    workdir = tmp_path_factory.mktemp("quotes")
    with Swtpm.tcp(workdir / "tpmstate") as swtpm:
        tools = Tools(swtpm.tcti, workdir)
        tools.tpm2("createprimary", "-C", "o", "-g", "sha256", "-G", "rsa", "-c", "primary.ctx")
        tools.flush_transient()
        tools.tpm2("pcrextend", f"15:sha256={PCR15_EVENT.hex()}")
        yield tools


@dataclasses.dataclass(frozen=True)
class SwtpmQuote:
    kind: str
    extra: bytes
    public: bytes
    message: bytes
    signature: bytes


def _quote(tpm: Tools, kind: str) -> SwtpmQuote:
    """Create an AK of ``kind`` in the TPM and quote PCRs 0, 1, 15 with it (once per kind)."""
    d = tpm.workdir
    extra = hashlib.sha256(kind.encode()).digest()
    if not (d / f"{kind}.msg").exists():
        template, scheme, hash_alg = SWTPM_KEYS[kind]
        tpm.tpm2(
            "create", "-C", "primary.ctx", "-G", template, "-a", AK_ATTRIBUTES,
            "-u", f"{kind}.pub", "-r", f"{kind}.priv", "-c", f"{kind}.ctx",
        )  # fmt: skip
        tpm.flush_transient()
        tpm.tpm2(
            "readpublic", "-c", f"{kind}.ctx", "-f", "pem", "-o", f"{kind}.pem",
            "-n", f"{kind}.name",
        )  # fmt: skip
        tpm.flush_transient()
        tpm.tpm2(
            "quote", "-c", f"{kind}.ctx", "-l", "sha256:0,1,15", "-q", extra.hex(),
            "--scheme", scheme, "-g", hash_alg,
            "-m", f"{kind}.msg", "-s", f"{kind}.sig", "-o", f"{kind}.pcrs",
        )  # fmt: skip
        tpm.flush_transient()
    return SwtpmQuote(
        kind,
        extra,
        (d / f"{kind}.pub").read_bytes(),
        (d / f"{kind}.msg").read_bytes(),
        (d / f"{kind}.sig").read_bytes(),
    )


@pytest.mark.swtpm
@pytest.mark.parametrize("kind", sorted(SWTPM_KEYS))
def test_swtpm_quote(tpm: Tools, kind: str) -> None:
    q = _quote(tpm, kind)
    d = tpm.workdir
    ak = parse_tpm2b_public(q.public)

    # The parsed key and name are what tpm2-tools reads back from the TPM.
    assert ak.name() == (d / f"{kind}.name").read_bytes()
    pem = serialization.load_pem_public_key((d / f"{kind}.pem").read_bytes())
    assert pem.public_numbers() == ak.public_key().public_numbers()  # type: ignore[union-attr]

    attest = verify_quote_signature(q.message, q.signature, ak)
    assert attest.extra_data == q.extra
    assert attest.pcr_selection == PcrSelection.of({SHA256: [0, 1, 15]})
    expected = {0: bytes(32), 1: bytes(32), 15: extend(SHA256, bytes(32), PCR15_EVENT)}
    verify_pcr_digest(attest, expected)
    with pytest.raises(PcrDigestError):
        verify_pcr_digest(attest, {**expected, 15: bytes(32)})

    for position in range(len(q.message)):
        with pytest.raises((QuoteSignatureError, QuoteStructureError, FormatError)):
            verify_quote_signature(_flip(q.message, position), q.signature, ak)
    for position in range(0, len(q.signature), 3):
        with pytest.raises(QuoteSignatureError):
            verify_quote_signature(q.message, _flip(q.signature, position), ak)

    # Same evidence through an outside oracle. tpm2_checkquote cannot check RSAPSS
    # quotes (tpm2-tools issue 3283), so those go to openssl, which also pins the
    # salt length a real TPM uses: as long as the digest.
    if kind == "rsa-pss":
        (d / "rsa-pss.raw").write_bytes(parse_signature(q.signature).signature)  # type: ignore[union-attr]
        run(
            [
                "openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss",
                "-sigopt", "rsa_pss_saltlen:32", "-verify", "rsa-pss.pem",
                "-signature", "rsa-pss.raw", "rsa-pss.msg",
            ],
            cwd=d,
        )  # fmt: skip
    else:
        run(
            [
                "tpm2_checkquote", "-u", f"{kind}.pub", "-m", f"{kind}.msg", "-s", f"{kind}.sig",
                "-f", f"{kind}.pcrs", "-q", q.extra.hex(), "-g", SWTPM_KEYS[kind][2],
            ],
            cwd=d,
        )  # fmt: skip


@pytest.mark.swtpm
def test_swtpm_unrestricted_key_quote_is_refused(tpm: Tools) -> None:
    tpm.tpm2(
        "create", "-C", "primary.ctx", "-G", "rsa2048:rsassa-sha256:null",
        "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        "-u", "free.pub", "-r", "free.priv", "-c", "free.ctx",
    )  # fmt: skip
    tpm.flush_transient()
    tpm.tpm2(
        "quote", "-c", "free.ctx", "-l", "sha256:0", "-m", "free.msg", "-s", "free.sig",
    )  # fmt: skip
    tpm.flush_transient()
    d = tpm.workdir
    ak = parse_tpm2b_public((d / "free.pub").read_bytes())
    assert not ak.is_restricted_signing_key
    with pytest.raises(QuoteSignatureError, match="not a restricted signing key"):
        verify_quote_signature((d / "free.msg").read_bytes(), (d / "free.sig").read_bytes(), ak)
