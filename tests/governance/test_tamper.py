"""The tamper suite (issue "Proof, not labels"): edit, delete, insert, reorder, truncate and a
full rewrite with recomputed hashes, each detected in 100 % of randomised trials by offline
verification against a saved signed checkpoint; a forged checkpoint signature is detected."""

from __future__ import annotations

import copy
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuplane.governance import audit, merkle, note
from gpuplane.governance.checkpoints import Notary
from gpuplane.store.repos_audit import GENESIS_HASH

KINDS = ("edit", "delete", "insert", "reorder", "truncate", "rewrite")
TRIALS = 1000


def _log(rng: random.Random, n: int) -> list[dict]:
    out, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        e = audit.entry_to_dict(audit._entry(seq, prev, "p" * 64, dict(  # noqa: SLF001
            at=1000.0 + seq, actor=rng.choice(["alice", "bob", "scheduler"]),
            action=rng.choice(["workload.submit", "workload.admit", "quota.set"]),
            object_kind="workload", object_id=f"wl-{rng.getrandbits(32):08x}",
            project_id=rng.randint(1, 4), org_id=1, detail={"n": rng.randint(0, 9)})))
        out.append(e)
        prev = e["hash"]
    return out


def _rechain(entries: list[dict], start: int = 0) -> None:
    """What a careful forger does: renumber and recompute every hash from ``start`` on."""
    prev = entries[start - 1]["hash"] if start else GENESIS_HASH
    for i in range(start, len(entries)):
        e = entries[i]
        e["seq"], e["prev_hash"] = i + 1, prev
        e["hash"] = prev = audit.entry_hash(e)


def _tamper(kind: str, entries: list[dict], rng: random.Random) -> list[dict]:
    t = copy.deepcopy(entries)
    i = rng.randrange(len(t))
    if kind == "edit":
        t[i]["actor"] = t[i]["actor"] + "-x"
    elif kind == "delete":
        del t[i]
    elif kind == "insert":
        fake = copy.deepcopy(t[i])
        fake["object_id"] = "wl-forged"
        t.insert(i, fake)
    elif kind == "reorder":
        j = (i + rng.randrange(1, len(t))) % len(t)
        t[i], t[j] = t[j], t[i]
    elif kind == "truncate":
        return t[:i]
    elif kind == "rewrite":
        t[i]["detail"] = {"n": 99}
        _rechain(t)
        return t
    if rng.random() < 0.5 and t:  # half the forgers also recompute the chain after the change
        _rechain(t, max(0, min(i, len(t) - 1)))
    return t


@pytest.fixture(scope="module")
def notary() -> Notary:
    return Notary(Ed25519PrivateKey.generate(), "gpuplane.test/log")


def _checkpoint(notary: Notary, entries: list[dict]) -> str:
    root = merkle.root([bytes.fromhex(e["hash"]) for e in entries])
    return notary.sign(len(entries), root)


def test_every_kind_of_tampering_is_detected_in_every_trial(notary: Notary) -> None:
    rng = random.Random(20261128)
    detected = {k: 0 for k in KINDS}
    for trial in range(TRIALS):
        kind = KINDS[trial % len(KINDS)]
        entries = _log(rng, rng.randint(8, 60))
        trusted = _checkpoint(notary, entries)
        intact = audit.verify_log(audit.LogFile(entries=entries), [notary.verifier], trusted)
        assert intact.ok, intact.problems
        forged = audit.LogFile(entries=_tamper(kind, entries, rng))
        result = audit.verify_log(forged, [notary.verifier], trusted)
        assert not result.ok, (kind, trial)
        detected[kind] += 1
    assert sum(detected.values()) == TRIALS and min(detected.values()) >= TRIALS // 6


def test_embedded_checkpoints_name_the_range_of_a_rewrite(notary: Notary) -> None:
    rng = random.Random(7)
    entries = _log(rng, 40)
    embedded = [(n, _checkpoint(notary, entries[:n]), None) for n in (10, 20, 30, 40)]
    forged = copy.deepcopy(entries)
    forged[24]["actor"] = "mallory"
    _rechain(forged)
    result = audit.verify_log(audit.LogFile(forged, embedded), [notary.verifier])
    assert result.checked.keys() == {10, 20}
    assert any("checkpoint 3 (size 30)" in p and "leaves 21..30" in p for p in result.problems)


def test_a_forged_or_missing_signature_is_detected(notary: Notary) -> None:
    entries = _log(random.Random(1), 12)
    good = _checkpoint(notary, entries)
    mallory = Notary(Ed25519PrivateKey.generate(), notary.origin)
    forged = _checkpoint(mallory, entries)
    log = audit.LogFile(entries=entries)
    assert audit.verify_log(log, [notary.verifier], good).ok
    bad = audit.verify_log(log, [notary.verifier], forged)
    assert bad.problems and "signature does not verify" in bad.problems[0]
    # a checkpoint whose body was changed after signing (another root) fails its signature
    lines = good.split("\n")
    lines[2] = note.Checkpoint(notary.origin, 12, b"\x01" * 32).body().split("\n")[2]
    assert not audit.verify_log(log, [notary.verifier], "\n".join(lines)).ok
    # no key given: the signatures are not taken on trust
    assert not audit.verify_log(log, [], good).ok
