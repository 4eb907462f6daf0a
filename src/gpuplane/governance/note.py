"""Signed notes, checkpoints and cosignatures: the wire formats of a transparency log.

Three public formats, so that tools outside gpuplane can check its audit log:

* signed notes (C2SP signed-note, Go ``golang.org/x/mod/sumdb/note``): a text ending in a
  newline, a blank line, then lines ``— <name> base64(key ID || signature)``. Keys travel as
  *vkeys* ``<name>+<hex key ID>+base64(type || public key)``; the key ID is the first four
  bytes of ``SHA-256(name || "\\n" || type || public key)``, so one name may rotate keys;
* checkpoints (C2SP tlog-checkpoint): the note text ``origin``, tree size, base64 root hash;
* Ed25519 cosignatures (C2SP tlog-cosignature v1, signature type 0x04): a witness signs
  ``cosignature/v1``, ``time <unix seconds>`` and the checkpoint, vouching that this is the
  largest consistent tree it has seen for that log at that time.

Pure: keys and times come in as arguments; nothing is read or written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ALG_ED25519 = 0x01  # a plain Ed25519 note signature
ALG_COSIGNATURE_V1 = 0x04  # a timestamped Ed25519 checkpoint cosignature
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16; Go's note takes 100
COSIGNATURE_HEADER = "cosignature/v1\n"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space

# Reasons a NoteError gives (stable strings).
MALFORMED = "malformed"
BAD_KEY = "bad_key"
BAD_SIGNATURE = "bad_signature"
UNVERIFIED = "unverified"

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # control characters other than newline


class NoteError(ValueError):
    """A note, key string or checkpoint is malformed or does not verify.

    ``reason`` is one of ``malformed`` (bad syntax), ``bad_key`` (a key string is wrong),
    ``bad_signature`` (a known key's signature fails: reject the whole note) and
    ``unverified`` (no signature from a known key).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: ``alg`` is ALG_ED25519 or ALG_COSIGNATURE_V1."""

    name: str
    key_id: int
    alg: int
    public_key: bytes  # the raw 32-byte Ed25519 key

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether ``signature`` (what follows the key ID) signs the note ``text``."""
        message = text.encode()
        if self.alg == ALG_COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 1 << 63:
                return False
            message = _cosigned_message(text, timestamp)
            signature = signature[8:]
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @property
    def label(self) -> str:
        """``name+keyid``, how messages name the key."""
        return f"{self.name}+{self.key_id:08x}"


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes as ``name`` (signature type ALG_ED25519)."""

    name: str
    key_id: int
    private_key: Ed25519PrivateKey = field(repr=False)


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """The 32-bit key ID: the first 4 bytes, big-endian, of SHA-256(name || "\\n" || alg || key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise NoteError(BAD_KEY, f"key name {name!r} must be non-empty, without spaces or '+'")


def _raw_public(public_key: Ed25519PublicKey | bytes) -> bytes:
    raw = public_key if isinstance(public_key, bytes) else public_key.public_bytes_raw()
    if len(raw) != 32:
        raise NoteError(BAD_KEY, f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return raw


def make_verifier(name: str, public_key: Ed25519PublicKey | bytes,
                  alg: int = ALG_ED25519) -> Verifier:
    """A verifier for ``name``'s Ed25519 key (ALG_COSIGNATURE_V1 for a witness's key)."""
    _check_name(name)
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(BAD_KEY, f"signature type {alg:#04x} is not supported")
    raw = _raw_public(public_key)
    return Verifier(name=name, key_id=key_id(name, alg, raw), alg=alg, public_key=raw)


def verifier_from_pem(name: str, pem: bytes, alg: int = ALG_ED25519) -> Verifier:
    """A verifier from a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) Ed25519 key."""
    try:
        key = load_pem_public_key(pem)
    except ValueError as e:
        raise NoteError(BAD_KEY, f"not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise NoteError(BAD_KEY, f"the PEM key is a {type(key).__name__}, not Ed25519")
    return make_verifier(name, key, alg)


def make_signer(name: str, private_key: Ed25519PrivateKey) -> Signer:
    """A note signer for ``name`` holding ``private_key``."""
    _check_name(name)
    raw = private_key.public_key().public_bytes_raw()
    return Signer(name=name, key_id=key_id(name, ALG_ED25519, raw), private_key=private_key)


def verifier_key(name: str, public_key: Ed25519PublicKey | bytes, alg: int = ALG_ED25519) -> str:
    """The vkey string ``name+keyid+base64(alg || key)``, safe to publish."""
    v = make_verifier(name, public_key, alg)
    return f"{v.label}+{base64.b64encode(bytes([alg]) + v.public_key).decode()}"


def signer_key(name: str, private_key: Ed25519PrivateKey) -> str:
    """The secret ``PRIVATE+KEY+name+keyid+base64(0x01 || seed)`` string of Go's note."""
    s = make_signer(name, private_key)
    data = base64.b64encode(bytes([ALG_ED25519]) + private_key.private_bytes_raw()).decode()
    return f"PRIVATE+KEY+{s.name}+{s.key_id:08x}+{data}"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(MALFORMED, f"{text!r} is not base64") from e


def _split_key(key: str, what: str) -> tuple[str, int, int, bytes]:
    parts = key.split("+", 2)  # the base64 key data may itself contain '+'
    if len(parts) != 3:
        raise NoteError(BAD_KEY, f"a {what} has the form name+keyid+base64key")
    name, hex_id, b64 = parts
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise NoteError(BAD_KEY, f"key ID {hex_id!r} is not 8 lowercase hex digits")
    try:
        data = _b64(b64)
    except NoteError as e:
        raise NoteError(BAD_KEY, f"the key data of {name} is not base64") from e
    if len(data) != 33:
        raise NoteError(BAD_KEY, f"the key data of {name} is {len(data)} bytes, not 1 + 32")
    return name, int(hex_id, 16), data[0], data[1:]


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse a vkey (Ed25519, type 0x01, or a cosigner's, type 0x04); the key ID must match."""
    name, kid, alg, raw = _split_key(vkey, "verifier key")
    v = make_verifier(name, raw, alg)
    if v.key_id != kid:
        raise NoteError(BAD_KEY, f"key ID {kid:08x} of {name} does not match its key")
    return v


def parse_signer_key(skey: str) -> Signer:
    """Parse a ``PRIVATE+KEY+...`` string; the key ID must match the key."""
    if not skey.startswith("PRIVATE+KEY+"):
        raise NoteError(BAD_KEY, "a signer key starts with PRIVATE+KEY+")
    name, kid, alg, seed = _split_key(skey.removeprefix("PRIVATE+KEY+"), "signer key")
    if alg != ALG_ED25519:
        raise NoteError(BAD_KEY, f"signature type {alg:#04x} of {name} is not Ed25519 (0x01)")
    s = make_signer(name, Ed25519PrivateKey.from_private_bytes(seed))
    if s.key_id != kid:
        raise NoteError(BAD_KEY, f"key ID {kid:08x} of {name} does not match its key")
    return s


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError(MALFORMED, "a note text must end with a newline")
    if _CONTROL.search(text):
        raise NoteError(MALFORMED, "a note must not contain control characters but newline")


def _signature_line(name: str, kid: int, signature: bytes) -> str:
    payload = kid.to_bytes(4, "big") + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(payload).decode()}\n"


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """The note ``text`` signed by every signer, in order."""
    _check_text(text)
    if not signers:
        raise NoteError(MALFORMED, "a signed note needs at least one signer")
    lines = [_signature_line(s.name, s.key_id, s.private_key.sign(text.encode()))
             for s in signers]
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class _Signature:
    name: str
    key_id: int
    signature: bytes  # what follows the key ID


def _parse(note: str) -> tuple[str, list[_Signature]]:
    """Split a note at its last blank line into text and signature lines, checking syntax."""
    if _CONTROL.search(note):
        raise NoteError(MALFORMED, "a note must not contain control characters but newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError(MALFORMED, "a note needs a blank line before its signatures")
    text, block = note[:split + 1], note[split + 2:]
    if not block.endswith("\n"):
        raise NoteError(MALFORMED, "a note's signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(MALFORMED, f"a note has at most {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        name, _, b64 = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if not line.startswith(SIGNATURE_PREFIX) or " " in b64:
            raise NoteError(MALFORMED, f"{line!r} is not a line '\u2014 name signature'")
        try:
            _check_name(name)
        except NoteError as e:
            raise NoteError(MALFORMED, str(e)) from e
        data = _b64(b64)
        if len(data) < 5:
            raise NoteError(MALFORMED, f"the signature of {name} is too short")
        sigs.append(_Signature(name, int.from_bytes(data[:4], "big"), data[4:]))
    return text, sigs


def unverified_text(note: str) -> str:
    """The text of a note WITHOUT checking any signature: only to choose the keys to check
    it with (a witness reads the origin this way). Raises NoteError if malformed."""
    return _parse(note)[0]


def _verified(note: str, verifiers: Sequence[Verifier]) -> tuple[str, list[tuple[Verifier,
                                                                                 bytes]]]:
    """The text and each (verifier, signature) of a known key; signatures of unknown keys are
    ignored, a failing one of a known key rejects the note (C2SP signed-note)."""
    text, sigs = _parse(note)
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise NoteError(BAD_KEY, f"two different keys are named {v.label}")
    good = []
    for sig in sigs:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(text, sig.signature):
            raise NoteError(BAD_SIGNATURE, f"invalid signature for key {v.label}")
        good.append((v, sig.signature))
    if not good:
        present = ", ".join(f"{s.name}+{s.key_id:08x}" for s in sigs)
        wanted = ", ".join(v.label for v in verifiers) or "none"
        raise NoteError(UNVERIFIED, f"no signature from a known key: the note is signed by "
                                    f"{present}; known keys: {wanted}")
    return text, good


def open_note(note: str, verifiers: Sequence[Verifier]) -> tuple[str, list[str]]:
    """The text of a signed note and the names of the known keys that signed it, in order.

    Raises NoteError: ``malformed``, ``bad_signature`` (a known key's signature fails) or
    ``unverified`` (no known key signed it).
    """
    text, good = _verified(note, verifiers)
    names = list(dict.fromkeys(v.name for v, _ in good))
    return text, names


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed statement of its tree head (C2SP tlog-checkpoint)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise NoteError(MALFORMED, f"checkpoint origin {self.origin!r} must be one "
                                       "non-empty line")
        if self.size < 0:
            raise NoteError(MALFORMED, f"checkpoint size {self.size} is negative")
        if len(self.root_hash) != 32:
            raise NoteError(MALFORMED, f"checkpoint root hash is {len(self.root_hash)} bytes, "
                                       "not 32")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line):
                raise NoteError(MALFORMED, f"extension line {line!r} must be one non-empty "
                                           "line")

    def body(self) -> str:
        """The note text: origin, size, base64 root hash, extension lines; each ends in \\n."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(),
                 *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text strictly: decimal size without leading zeros, a
    canonical base64 root of 32 bytes, non-empty extension lines. Raises NoteError."""
    _check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError(MALFORMED, "a checkpoint has an origin, a size and a root hash line")
    origin, size, b64, *extensions = lines
    if not _DECIMAL.fullmatch(size):
        raise NoteError(MALFORMED, f"checkpoint size {size!r} is not a decimal without "
                                   "leading zeros")
    root_hash = _b64(b64)
    if base64.b64encode(root_hash).decode() != b64:
        raise NoteError(MALFORMED, f"checkpoint root hash {b64!r} is not canonical base64")
    return Checkpoint(origin, int(size), root_hash, tuple(extensions))


def _cosigned_message(checkpoint_body: str, timestamp: int) -> bytes:
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_body}".encode()


def cosign(checkpoint_body: str, key: Ed25519PrivateKey, name: str, timestamp: int) -> str:
    """The cosignature line (C2SP tlog-cosignature v1) of witness ``name`` at ``timestamp``
    (unix seconds) on a checkpoint's note text; append it to the signed checkpoint."""
    parse_checkpoint(checkpoint_body)
    if not 0 <= timestamp < 1 << 63:
        raise NoteError(MALFORMED, f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    v = make_verifier(name, key.public_key(), ALG_COSIGNATURE_V1)
    signature = key.sign(_cosigned_message(checkpoint_body, timestamp))
    return _signature_line(name, v.key_id, timestamp.to_bytes(8, "big") + signature)


def verify_cosignature(note: str, witness: Verifier) -> int:
    """The timestamp (unix seconds) of ``witness``'s valid cosignature on the checkpoint
    ``note``. ``witness`` is a cosigner verifier (``make_verifier(name, key,
    ALG_COSIGNATURE_V1)`` or a type-0x04 vkey). Other signatures are ignored, the log's
    included: check those with ``open_note``. Raises NoteError."""
    if witness.alg != ALG_COSIGNATURE_V1:
        raise NoteError(BAD_KEY, f"{witness.label} is not a cosigner key (type 0x04)")
    text, good = _verified(note, [witness])
    parse_checkpoint(text)
    return int.from_bytes(good[0][1][:8], "big")
