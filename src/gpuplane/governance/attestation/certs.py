"""Certificates for attestation: load PEM/DER, build a chain to a pinned root, read DER.

Chains are built by name and signature, not by position, so an Attester may send its
certificates in any order and with extras; only a self-signed certificate the
operator configured (a trust anchor) can end a chain. Vendor roots (AMD ARK,
NVIDIA device root) are never taken from the evidence itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

_PEM_MARK = b"-----BEGIN CERTIFICATE-----"
MAX_CHAIN = 8


def load_certificates(blobs: Iterable[bytes]) -> list[x509.Certificate]:
    """Each blob is one DER certificate or PEM text with one or more.

    Raises ValueError saying which item could not be read.
    """
    certs: list[x509.Certificate] = []
    with warnings.catch_warnings():
        # AMD's and NVIDIA's certificates predate some RFC 5280 checks (serial sign).
        warnings.simplefilter("ignore")
        for i, blob in enumerate(blobs):
            try:
                if _PEM_MARK in blob:
                    certs.extend(x509.load_pem_x509_certificates(blob))
                else:
                    certs.append(x509.load_der_x509_certificate(blob))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"certificate item {i} is neither PEM nor DER X.509 "
                                 f"({exc})") from None
    return certs


def verify_p384(cert: x509.Certificate, r: int, s: int, message: bytes) -> str | None:
    """Why an ECDSA P-384 / SHA-384 signature (r, s) over ``message`` does not verify with
    ``cert``'s key (``"no P-384 key"`` or ``"does not verify"``); None when it does."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return "no P-384 key"
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return "does not verify"
    return None


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer`` names and signs ``cert`` (RSA-PSS, PKCS#1 v1.5 or ECDSA)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def anchors_of(roots: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The trust anchors among configured roots: self-signed, with a valid self-signature."""
    return [c for c in roots if c.issuer == c.subject and signed_by(c, c)]


@dataclass(frozen=True)
class ChainResult:
    """A chain from leaf to anchor (leaf first), or why none could be built."""

    chain: tuple[x509.Certificate, ...]
    code: str | None = None  # "chain_invalid" or "root_untrusted" when it failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


def build_chain(leaf: x509.Certificate, pool: Iterable[x509.Certificate],
                anchors: Iterable[x509.Certificate]) -> ChainResult:
    """Follow issuers from ``leaf`` through ``pool`` until an anchor signs the last one."""
    anchors = list(anchors)
    if not anchors:
        return ChainResult((), "root_untrusted", "no trusted root is configured")
    pool = [c for c in pool if c not in anchors]
    chain = [leaf]
    while len(chain) <= MAX_CHAIN:
        current = chain[-1]
        if current in anchors:
            return ChainResult(tuple(chain))
        anchor = next((a for a in anchors if signed_by(current, a)), None)
        if anchor is not None:
            return ChainResult((*chain, anchor))
        if current.issuer == current.subject:
            return ChainResult((), "root_untrusted",
                               f"chain ends at self-signed {common_name(current)!r}, "
                               "which is not a trusted root")
        named = [c for c in pool if c.subject == current.issuer and c not in chain]
        issuer = next((c for c in named if signed_by(current, c)), None)
        if issuer is None:
            why = ("does not verify with the certificate of that name" if named
                   else "is not among the given certificates")
            return ChainResult((), "chain_invalid",
                               f"issuer {current.issuer.rfc4514_string()!r} of "
                               f"{common_name(current)!r} {why}")
        chain.append(issuer)
    return ChainResult((), "chain_invalid", f"chain longer than {MAX_CHAIN} certificates")


def validity_problems(chain: Iterable[x509.Certificate],
                      now: datetime) -> list[tuple[str, str]]:
    """``(code, detail)`` for each certificate not valid at ``now``."""
    problems = []
    for cert in chain:
        if now > cert.not_valid_after_utc:
            problems.append(("cert.expired", f"{common_name(cert)!r} expired "
                             f"{cert.not_valid_after_utc.isoformat()}"))
        elif now < cert.not_valid_before_utc:
            problems.append(("cert.not_yet_valid", f"{common_name(cert)!r} is valid from "
                             f"{cert.not_valid_before_utc.isoformat()}"))
    return problems


def extension_value(cert: x509.Certificate, oid: str) -> bytes | None:
    """The raw extnValue of a non-standard extension, or None when absent."""
    for ext in cert.extensions:
        if ext.oid.dotted_string == oid:
            value = ext.value
            return value.value if isinstance(value, x509.UnrecognizedExtension) else None
    return None


def der_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """Read one DER TLV at ``offset``: (tag, value, offset after it). ValueError if cut."""
    if offset + 2 > len(data):
        raise ValueError("DER: truncated header")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or offset + n > len(data):
            raise ValueError("DER: bad length")
        length = int.from_bytes(data[offset:offset + n], "big")
        offset += n
    if offset + length > len(data):
        raise ValueError("DER: value runs past the end")
    return tag, data[offset:offset + length], offset + length


def der_walk(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every TLV in ``data``, depth first, descending into constructed ones."""
    offset = 0
    while offset < len(data):
        tag, value, offset = der_tlv(data, offset)
        yield tag, value
        if tag & 0x20:
            yield from der_walk(value)


def der_integer(data: bytes) -> int:
    """A DER INTEGER (non-negative, as certificate extensions carry SPL values)."""
    tag, value, end = der_tlv(data)
    if tag != 0x02 or end != len(data) or not value:
        raise ValueError("DER: not a single INTEGER")
    return int.from_bytes(value, "big", signed=True)
