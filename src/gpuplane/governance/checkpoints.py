"""Signed checkpoints of the audit log: the signing key, the origin, signing, proofs.

The key is an Ed25519 private key in a PEM file outside the database (default
``$GPUPLANE_HOME/audit-key.pem``, mode 0600, created on first use); whoever can write the
database still cannot sign. A checkpoint is a C2SP tlog-checkpoint (origin, size, root hash)
as a signed note. The scheduler leader signs one every ``audit_checkpoint_interval_s`` when
the log grew, and one at a graceful shutdown; anyone with the public key
(``gpuplane audit key``) verifies them offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

from gpuplane.domain.errors import GpuplaneError
from gpuplane.governance import merkle, note
from gpuplane.store.records import Checkpoint


class SigningKeyError(GpuplaneError):
    """The signing key file is unreadable, not Ed25519 or too open."""

    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.audit.key_invalid", detail=detail)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The installation's signing key; created (0600, in a 0700 folder if new) when absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return key
    if path.stat().st_mode & 0o077:
        raise SigningKeyError(f"audit signing key {path} is readable by others (mode "
                        f"{path.stat().st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"audit signing key {path} is not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"audit signing key {path} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def default_origin(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return f"gpuplane/{note.key_id('gpuplane', note.ALG_ED25519, raw):08x}"


@dataclass
class Notary:
    """Signs checkpoints of one log (``origin``) with one key."""

    key: Ed25519PrivateKey
    origin: str

    @property
    def signer(self) -> note.Signer:
        return note.make_signer(self.origin, self.key)

    @property
    def verifier(self) -> note.Verifier:
        return note.make_verifier(self.origin, self.key.public_key())

    def sign(self, size: int, root_hash: bytes) -> str:
        body = note.Checkpoint(self.origin, size, root_hash).body()
        return note.sign_note(body, [self.signer])


def notary_for(tx: Any, key: Ed25519PrivateKey, configured_origin: str | None) -> Notary:
    """The notary of the log in ``tx`` (a write transaction): the stored origin, else the
    configured one (or the default); the key's public half is added to the log's keys."""
    origin, keys = tx.checkpoints.identity()
    pem = public_pem(key)
    if not origin or pem not in keys:
        origin = origin or configured_origin or default_origin(key)
        tx.checkpoints.set_identity(origin, [*keys, pem] if pem not in keys else keys)
    return Notary(key, origin)


def leaf_hashes(tx: Any, size: int | None = None) -> list[bytes]:
    return [bytes.fromhex(h) for h in tx.audit.hashes(size)]


def make_checkpoint(tx: Any, notary: Notary, reason: str, now: float) -> Checkpoint | None:
    """Sign and store a checkpoint of the whole log (in ``tx``, a write transaction; the log
    head is locked so no entry slips in between) unless the last one has the same size."""
    size = tx.audit.lock_head().seq
    last = tx.checkpoints.latest()
    if last is not None and last.size == size:
        return None
    root_hash = merkle.root(leaf_hashes(tx, size))
    return tx.checkpoints.add(size, root_hash.hex(), notary.sign(size, root_hash), reason, now)


def inclusion(tx: Any, seq: int, size: int) -> tuple[str, list[str]]:
    """(leaf hash, audit path) of entry ``seq`` in the tree of the first ``size`` entries."""
    hashes = leaf_hashes(tx, size)
    if not 1 <= seq <= size <= len(hashes):
        raise ValueError(f"entry {seq} is not in a tree of {size} entries "
                         f"(the log holds {len(hashes)})")
    return hashes[seq - 1].hex(), [h.hex() for h in merkle.inclusion_proof(hashes, seq - 1)]


def consistency(tx: Any, old_size: int, new_size: int) -> list[str]:
    hashes = leaf_hashes(tx, new_size)
    if not 0 <= old_size <= new_size <= len(hashes):
        raise ValueError(f"sizes {old_size} -> {new_size} do not fit a log of {len(hashes)}")
    return [h.hex() for h in merkle.consistency_proof(hashes, old_size)]
