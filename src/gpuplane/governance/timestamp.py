"""RFC 3161 timestamps that anchor audit-log checkpoints in time.

A signed checkpoint says what the log contained, not when: a timestamp authority (TSA)
countersigning the checkpoint's hash proves it existed no later than the TSA's ``genTime``,
so a log cannot later present a different history as having been there all along.

This module builds the request and checks the response; sending the request (HTTP POST of
``application/timestamp-query`` to the TSA) is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")


class TimestampError(ValueError):
    """A timestamp response is unreadable, or does not verify for the data and roots."""


def timestamp_request(data: bytes) -> tuple[bytes, int]:
    """A DER ``TimeStampReq`` for ``data`` (SHA-256 imprint, random nonce, certificate
    requested) and its nonce, to pass to ``verify_timestamp``."""
    request = (TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256)
               .nonce(nonce=True).cert_request(cert_request=True).build())
    nonce = request.nonce
    if nonce is None:
        raise TimestampError("the timestamp request was built without a nonce")
    return request.as_bytes(), nonce


def _certificates(pems: Sequence[bytes]) -> list[x509.Certificate]:
    certs = []
    for pem in pems:
        try:
            certs.extend(x509.load_pem_x509_certificates(pem))
        except ValueError as e:
            raise TimestampError(f"a root is not a PEM certificate: {e}") from e
    return certs


def verify_timestamp(response_der: bytes, data: bytes, roots: Sequence[bytes], *,
                     nonce: int | None = None) -> datetime:
    """The TSA's ``genTime`` (timezone-aware, UTC) after checking that ``response_der``
    is a granted RFC 3161 response over SHA-256 of ``data``, signed by a certificate with
    the critical timeStamping key usage that chains to one of ``roots``, and carries
    ``nonce`` when given. Raises TimestampError.

    ``roots`` are PEM bytes (each may hold several certificates), all trusted as anchors:
    rfc3161-client trusts every certificate it is handed, so list a TSA's intermediate
    here only if it is to be trusted on its own. The chain is checked at ``genTime``, so
    an expired TSA certificate still proves what it signed while it was valid.
    """
    if not roots:
        raise TimestampError("at least one trusted root certificate is needed")
    try:
        response = decode_timestamp_response(response_der)
    except ValueError as e:
        raise TimestampError(f"not a timestamp response: {e}") from e
    builder = VerifierBuilder()
    for cert in _certificates(roots):
        builder = builder.add_root_certificate(cert)
    if nonce is not None:
        builder = builder.nonce(nonce)
    try:
        tst_info = response.tst_info
        builder.build().verify_message(response, data)
    except (VerificationError, ValueError) as e:
        raise TimestampError(f"the timestamp does not verify: {e}") from e
    if tst_info.message_imprint.hash_algorithm != SHA256_OID:
        raise TimestampError("the timestamp's message imprint is not SHA-256")
    gen_time = tst_info.gen_time
    if gen_time.tzinfo is None:
        gen_time = gen_time.replace(tzinfo=timezone.utc)
    return gen_time
