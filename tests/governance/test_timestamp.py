"""RFC 3161 anchoring, against real responses minted by ``openssl ts`` with a throwaway TSA."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gpuplane.governance.timestamp import TimestampError, timestamp_request, verify_timestamp

from .tsa import OPENSSL, Tsa

pytestmark = pytest.mark.skipif(not Path(OPENSSL).exists(),
                                reason="the openssl command is needed to mint RFC 3161 responses")

BODY = b"gpuplane.example/audit\n42\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Tsa:
    return Tsa(tmp_path_factory.mktemp("tsa"))


def test_request_asks_for_sha256_a_nonce_and_the_certificate(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    lines = tsa.query_text(request).splitlines()
    assert "Hash Algorithm: sha256" in lines
    assert "Certificate required: yes" in lines
    [nonce_line] = [line for line in lines if line.startswith("Nonce: 0x")]
    assert int(nonce_line.removeprefix("Nonce: 0x"), 16) == nonce
    dump = [line.split(" - ", 1)[1][:47] for line in lines if " - " in line]
    assert bytes.fromhex("".join(dump).replace("-", " ")) == hashlib.sha256(BODY).digest()


def test_each_request_has_a_fresh_nonce() -> None:
    assert timestamp_request(BODY)[1] != timestamp_request(BODY)[1]


def test_response_verifies_and_gives_the_tsa_time(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    gen_time = verify_timestamp(tsa.reply(request), BODY, [tsa.root.read_bytes()], nonce=nonce)
    assert gen_time.tzinfo is not None
    assert abs(gen_time - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_response_for_other_data_is_refused(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(tsa.reply(request), BODY + b"x", [tsa.root.read_bytes()], nonce=nonce)


def test_response_to_another_request_is_refused_by_nonce(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    response = tsa.reply(request)
    with pytest.raises(TimestampError, match="[Nn]once"):
        verify_timestamp(response, BODY, [tsa.root.read_bytes()], nonce=nonce + 1)


def test_tampered_response_is_refused(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    response = bytearray(tsa.reply(request))
    response[-1] ^= 0x01  # inside the signature value, the last field of the token
    with pytest.raises(TimestampError):
        verify_timestamp(bytes(response), BODY, [tsa.root.read_bytes()], nonce=nonce)


def test_response_under_an_untrusted_root_is_refused(tsa: Tsa) -> None:
    request, nonce = timestamp_request(BODY)
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(tsa.reply(request), BODY, [tsa.other_root.read_bytes()], nonce=nonce)


def test_garbage_and_missing_roots_are_refused(tsa: Tsa) -> None:
    request, _ = timestamp_request(BODY)
    response = tsa.reply(request)
    with pytest.raises(TimestampError, match="not a timestamp response"):
        verify_timestamp(b"\x30\x03junk", BODY, [tsa.root.read_bytes()])
    with pytest.raises(TimestampError, match="root"):
        verify_timestamp(response, BODY, [])
    with pytest.raises(TimestampError, match="PEM"):
        verify_timestamp(response, BODY, [b"not a certificate"])
