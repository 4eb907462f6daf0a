"""Anchoring signed checkpoints outside the installation (optional): witnesses and a TSA.

A witness (C2SP tlog-witness: another gpuplane installation's ``/witness/add-checkpoint``,
or any process holding its own key) cosigns a checkpoint only if it extends the last one it
cosigned, so the operator cannot show auditors two different histories. An RFC 3161
time-stamping authority proves a checkpoint existed at a time. Both are network calls with
short timeouts made after the checkpoint is stored; a failure is logged and the checkpoint
stays valid on its own signature.

Witnesses are configured as ``NAME=URL=VERIFIER_KEY`` (``audit_witnesses``, comma-separated):
the URL of the add-checkpoint endpoint and the witness's cosignature verifier key
(``name+keyid+base64(0x04||pub)``) to check what it returns.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from gpuplane.governance import note

log = logging.getLogger("gpuplane.audit")
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Witness:
    name: str
    url: str
    verifier: note.Verifier


def parse_witnesses(text: str) -> list[Witness]:
    """``NAME=URL=VKEY,...`` -> witnesses; ValueError naming the bad entry."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split("=", 2)
        if len(parts) != 3 or not parts[1].startswith(("http://", "https://")):
            raise ValueError(f"witness {item!r}: expected NAME=URL=VERIFIER_KEY")
        verifier = note.parse_verifier_key(parts[2])
        if verifier.alg != note.ALG_COSIGNATURE_V1 or verifier.name != parts[0]:
            raise ValueError(f"witness {parts[0]!r}: its key must be a cosignature/v1 "
                             "verifier key of the same name")
        out.append(Witness(parts[0], parts[1], verifier))
    return out


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], signed: str) -> str:
    return "".join([f"old {old_size}\n", *(base64.b64encode(h).decode() + "\n" for h in proof),
                    "\n", signed])


def cosign_with(witness: Witness, signed: str, old_size: int,
                proof_from: Callable[[int], list[bytes]],
                client: httpx.Client) -> tuple[str | None, int]:
    """Ask one witness to cosign ``signed``; (its verified cosignature line or None, the size
    it now holds). ``old_size`` is the size we believe it last cosigned; on a 409 the witness
    tells its size and we try once more with a proof from there."""
    for _ in range(2):
        body = add_checkpoint_body(old_size, proof_from(old_size), signed)
        r = client.post(witness.url, content=body.encode(), timeout=TIMEOUT_S,
                        headers={"Content-Type": "text/plain"})
        if r.status_code == 409 and r.text.strip().isdigit():
            old_size = int(r.text.strip())
            continue
        if r.status_code != 200:
            log.warning("witness %s refused the checkpoint: %s %s", witness.name,
                        r.status_code, r.text[:200])
            return None, old_size
        line = r.text.strip() + "\n"
        cosigned = signed + line
        try:
            note.verify_cosignature(cosigned, witness.verifier)
        except note.NoteError as exc:
            log.warning("witness %s sent a cosignature that does not verify: %s",
                        witness.name, exc)
            return None, old_size
        text = note.unverified_text(signed)
        return line, note.parse_checkpoint(text).size
    return None, old_size


def timestamp(signed: str, url: str, client: httpx.Client) -> str | None:
    """An RFC 3161 token (base64 DER) over the checkpoint's body, or None (logged)."""
    from gpuplane.governance.timestamp import timestamp_request

    body = note.unverified_text(signed).encode()
    request, _nonce = timestamp_request(body)
    try:
        r = client.post(url, content=request, timeout=TIMEOUT_S,
                        headers={"Content-Type": "application/timestamp-query"})
    except httpx.HTTPError as exc:
        log.warning("time-stamping authority %s unreachable: %s", url, exc)
        return None
    if r.status_code != 200:
        log.warning("time-stamping authority %s answered %s", url, r.status_code)
        return None
    return base64.b64encode(r.content).decode()
