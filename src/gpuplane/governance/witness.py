"""A transparency log witness, as pure decisions (C2SP tlog-witness, ``add-checkpoint``).

A witness remembers, per log origin, the size and root hash of the last checkpoint it
cosigned, and cosigns a new checkpoint only if it verifies the log's signature and a
consistency proof from that remembered tree. Clients that require cosignatures from
witnesses they trust then cannot be shown a forked ("split") view of the log.

State goes in and comes out: the caller persists it, and must check-and-store atomically
(per origin), or two concurrent requests could roll a log back. Errors carry stable codes;
the HTTP status the spec gives each is noted on its class.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuplane.domain.errors import Conflict, GpuplaneError, InvalidInput, NotFound
from gpuplane.governance.merkle import EMPTY_ROOT, ProofError, verify_consistency
from gpuplane.governance.note import (
    Checkpoint,
    NoteError,
    Verifier,
    cosign,
    open_note,
    parse_checkpoint,
    unverified_text,
)

MAX_PROOF_HASHES = 63  # a proof in a tree of fewer than 2^64 leaves never needs more


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint a witness cosigned for one log."""

    size: int
    root_hash: bytes


class UnknownLog(NotFound):
    """The checkpoint's origin is not a log this witness follows (HTTP 404)."""

    def __init__(self, origin: str) -> None:
        super().__init__(f"this witness does not follow the log {origin!r}",
                         code="gpuplane.witness.unknown_log")


class UnverifiedCheckpoint(GpuplaneError):
    """No valid signature from the log's keys, or a failing one (HTTP 403 in the spec)."""

    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.witness.unverified", detail=detail)


class BadWitnessRequest(GpuplaneError):
    """The request is malformed or its old size exceeds the checkpoint size (HTTP 400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.witness.bad_request", detail=detail)


class WitnessConflict(Conflict):
    """``old_size`` is not the size the witness last cosigned (HTTP 409); ``recorded_size``
    is that size, for the client to fetch a proof from and retry."""

    def __init__(self, old_size: int, recorded_size: int) -> None:
        super().__init__(f"old size {old_size} is not the size this witness last cosigned, "
                         f"{recorded_size}: retry with a proof from {recorded_size}",
                         code="gpuplane.witness.conflict")
        self.recorded_size = recorded_size


class InconsistentCheckpoint(InvalidInput):
    """The checkpoint does not extend the recorded tree: a bad proof, different roots at the
    same size, or a non-empty tree root at size 0 (HTTP 422). Possibly log misbehaviour."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="gpuplane.witness.inconsistent")


def parse_add_checkpoint(body: str) -> tuple[int, list[bytes], str]:
    """Split an ``add-checkpoint`` request body into (old size, consistency proof, note).

    The body is ``old <size>``, up to 63 base64 hash lines, an empty line, then the signed
    checkpoint. Raises BadWitnessRequest.
    """
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise BadWitnessRequest("the request needs an empty line before the checkpoint")
    old_line, *proof_lines = head.split("\n")
    match = re.fullmatch(r"old (0|[1-9][0-9]*)", old_line)
    if match is None:
        raise BadWitnessRequest(f"first line {old_line!r} is not 'old <size>'")
    if len(proof_lines) > MAX_PROOF_HASHES:
        raise BadWitnessRequest(f"{len(proof_lines)} proof lines, more than "
                                f"{MAX_PROOF_HASHES}")
    proof = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except ValueError as e:
            raise BadWitnessRequest(f"proof line {line!r} is not base64") from e
        if len(h) != 32:
            raise BadWitnessRequest(f"proof line {line!r} is not a 32-byte hash")
        proof.append(h)
    return int(match.group(1)), proof, note


def _check_extends(recorded: LogState | None, old_size: int, checkpoint: Checkpoint,
                   proof: Sequence[bytes]) -> None:
    """Raise unless ``checkpoint`` extends the recorded tree (the spec's 409/422 checks)."""
    recorded_size = recorded.size if recorded else 0
    if old_size != recorded_size:
        raise WitnessConflict(old_size, recorded_size)
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
        raise InconsistentCheckpoint("a checkpoint of size 0 must have the empty tree's root")
    if recorded is None or old_size == 0:
        if proof:
            raise InconsistentCheckpoint("the proof from old size 0 must be empty: every "
                                         "tree extends the empty tree")
        return
    try:
        verify_consistency(recorded.size, checkpoint.size, recorded.root_hash,
                           checkpoint.root_hash, proof)
    except ProofError as e:
        raise InconsistentCheckpoint(f"the checkpoint of size {checkpoint.size} does not "
                                     f"extend the cosigned tree of size {recorded.size}: "
                                     f"{e}") from e


def add_checkpoint(state: Mapping[str, LogState], log_verifiers: Mapping[str, Sequence[Verifier]],
                   note: str, old_size: int, consistency_proof: Sequence[bytes],
                   witness_key: Ed25519PrivateKey, witness_name: str, now: float
                   ) -> tuple[str, dict[str, LogState]]:
    """Verify a signed checkpoint and return (cosignature line, new state).

    ``state`` maps origin to the last cosigned tree (absent: none yet, size 0);
    ``log_verifiers`` maps each followed origin to its trusted log keys; ``now`` is unix
    seconds, the cosignature's timestamp. The input state is not changed. Raises, in the
    spec's order: BadWitnessRequest, UnknownLog, UnverifiedCheckpoint, WitnessConflict,
    InconsistentCheckpoint.
    """
    try:
        checkpoint = parse_checkpoint(unverified_text(note))
    except NoteError as e:
        raise BadWitnessRequest(f"not a signed checkpoint: {e}") from e
    if len(consistency_proof) > MAX_PROOF_HASHES:
        raise BadWitnessRequest(f"{len(consistency_proof)} proof hashes, more than "
                                f"{MAX_PROOF_HASHES}")
    verifiers = log_verifiers.get(checkpoint.origin)
    if not verifiers:
        raise UnknownLog(checkpoint.origin)
    try:
        text, _ = open_note(note, verifiers)
    except NoteError as e:
        raise UnverifiedCheckpoint(f"checkpoint of {checkpoint.origin!r}: {e}") from e
    if old_size < 0:
        raise BadWitnessRequest(f"old size {old_size} is negative")
    if old_size > checkpoint.size:
        raise BadWitnessRequest(f"old size {old_size} is larger than the checkpoint size "
                                f"{checkpoint.size}: a log never shrinks")
    _check_extends(state.get(checkpoint.origin), old_size, checkpoint, consistency_proof)
    timestamp = int(now)
    if timestamp <= 0:
        raise ValueError(f"now ({now}) must be a positive unix time: a cosignature's "
                         "timestamp must not be zero")
    line = cosign(text, witness_key, witness_name, timestamp)
    new_state = {**state, checkpoint.origin: LogState(checkpoint.size, checkpoint.root_hash)}
    return line, new_state
