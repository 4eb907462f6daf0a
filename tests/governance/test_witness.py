"""The witness cosigns only checkpoints that extend what it cosigned before (C2SP tlog-witness)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuplane.domain.errors import Conflict, InvalidInput, NotFound
from gpuplane.governance.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root
from gpuplane.governance.note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    make_signer,
    make_verifier,
    open_note,
    sign_note,
    verify_cosignature,
)
from gpuplane.governance.witness import (
    BadWitnessRequest,
    InconsistentCheckpoint,
    LogState,
    UnknownLog,
    UnverifiedCheckpoint,
    WitnessConflict,
    add_checkpoint,
    parse_add_checkpoint,
)

ORIGIN = "gpuplane.example/audit"
WITNESS = "witness.example/w1"
NOW = 1_760_000_000.5
LOG_KEY = Ed25519PrivateKey.generate()
WITNESS_KEY = Ed25519PrivateKey.generate()
LOGS = {ORIGIN: [make_verifier(ORIGIN, LOG_KEY.public_key())]}
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(20)]


def signed(size: int, key: Ed25519PrivateKey = LOG_KEY, root_hash: bytes | None = None) -> str:
    body = Checkpoint(ORIGIN, size, root(LEAVES[:size]) if root_hash is None else root_hash)
    return sign_note(body.body(), [make_signer(ORIGIN, key)])


def add(state: dict[str, LogState], note: str, old: int, proof: list[bytes]
        ) -> tuple[str, dict[str, LogState]]:
    return add_checkpoint(state, LOGS, note, old, proof, WITNESS_KEY, WITNESS, NOW)


def test_first_checkpoint_is_cosigned_from_old_size_zero() -> None:
    line, state = add({}, signed(7), 0, [])
    assert state == {ORIGIN: LogState(7, root(LEAVES[:7]))}
    witness = make_verifier(WITNESS, WITNESS_KEY.public_key(), ALG_COSIGNATURE_V1)
    assert verify_cosignature(signed(7) + line, witness) == int(NOW)
    assert open_note(signed(7) + line, [*LOGS[ORIGIN], witness])[1] == [ORIGIN, WITNESS]


def test_growth_is_cosigned_with_a_consistency_proof() -> None:
    _, state = add({}, signed(7), 0, [])
    line, state2 = add(state, signed(20), 7, consistency_proof(LEAVES, 7))
    assert state2[ORIGIN] == LogState(20, root(LEAVES))
    assert state[ORIGIN].size == 7  # the input state is left alone
    assert line.startswith(f"\u2014 {WITNESS} ")


def test_the_same_checkpoint_again_is_cosigned() -> None:
    _, state = add({}, signed(7), 0, [])
    _, again = add(state, signed(7), 7, [])
    assert again == state


def test_wrong_old_size_is_a_conflict_naming_the_recorded_size() -> None:
    _, state = add({}, signed(7), 0, [])
    with pytest.raises(WitnessConflict) as info:
        add(state, signed(20), 5, consistency_proof(LEAVES, 5))
    assert info.value.recorded_size == 7
    assert isinstance(info.value, Conflict)  # the API answers 409
    with pytest.raises(WitnessConflict) as info:
        add({}, signed(20), 7, consistency_proof(LEAVES, 7))
    assert info.value.recorded_size == 0


def test_bad_consistency_proof_is_refused() -> None:
    _, state = add({}, signed(7), 0, [])
    proof = consistency_proof(LEAVES, 7)
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    with pytest.raises(InconsistentCheckpoint) as info:
        add(state, signed(20), 7, proof)
    assert isinstance(info.value, InvalidInput)  # the API answers 422


def test_a_fork_at_the_same_size_is_refused() -> None:
    _, state = add({}, signed(7), 0, [])
    with pytest.raises(InconsistentCheckpoint):
        add(state, signed(7, root_hash=root(LEAVES[1:8])), 7, [])


def test_a_fork_at_a_larger_size_is_refused() -> None:
    _, state = add({}, signed(7), 0, [])
    other = [leaf_hash(b"rewritten")] + LEAVES[1:]
    forked = signed(20, root_hash=root(other))
    with pytest.raises(InconsistentCheckpoint):
        add(state, forked, 7, consistency_proof(other, 7))


def test_a_shrinking_log_is_refused() -> None:
    _, state = add({}, signed(10), 0, [])
    with pytest.raises(BadWitnessRequest, match="never shrinks"):
        add(state, signed(5), 10, [])
    with pytest.raises(WitnessConflict):
        add(state, signed(5), 5, [])


def test_forged_log_signature_is_refused() -> None:
    with pytest.raises(UnverifiedCheckpoint, match="no signature from a known key"):
        add({}, signed(7, key=Ed25519PrivateKey.generate()), 0, [])


def test_tampered_checkpoint_is_refused() -> None:
    note = signed(7).replace("\n7\n", "\n8\n", 1)
    with pytest.raises(UnverifiedCheckpoint, match="invalid signature"):
        add({}, note, 0, [])


def test_unknown_log_is_not_found() -> None:
    note = sign_note(Checkpoint("other.example/log", 1, LEAVES[0]).body(),
                     [make_signer("other.example/log", LOG_KEY)])
    with pytest.raises(UnknownLog) as info:
        add({}, note, 0, [])
    assert isinstance(info.value, NotFound)  # the API answers 404


def test_not_a_checkpoint_is_a_bad_request() -> None:
    with pytest.raises(BadWitnessRequest):
        add({}, sign_note("hello\n", [make_signer(ORIGIN, LOG_KEY)]), 0, [])


def test_empty_tree_needs_the_empty_root() -> None:
    _, state = add({}, signed(0, root_hash=EMPTY_ROOT), 0, [])
    assert state[ORIGIN] == LogState(0, EMPTY_ROOT)
    with pytest.raises(InconsistentCheckpoint):
        add({}, signed(0, root_hash=LEAVES[0]), 0, [])


def test_proof_from_size_zero_must_be_empty() -> None:
    with pytest.raises(InconsistentCheckpoint):
        add({}, signed(7), 0, [LEAVES[0]])


def test_too_long_proof_is_a_bad_request() -> None:
    _, state = add({}, signed(7), 0, [])
    with pytest.raises(BadWitnessRequest):
        add(state, signed(20), 7, [LEAVES[0]] * 64)


# The example request body of C2SP tlog-witness (tlog-witness.md, add-checkpoint).
SPEC_BODY = """old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

""" + ("\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URY"
       "N7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")


def test_parse_the_spec_example_request() -> None:
    old, proof, note = parse_add_checkpoint(SPEC_BODY)
    assert old == 20852014
    assert proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert len(proof) == 4
    assert note.startswith("example.com/behind-the-sofa\n20852163\n")


def test_parse_a_request_without_proof() -> None:
    assert parse_add_checkpoint("old 0\n\n" + signed(7)) == (0, [], signed(7))


@pytest.mark.parametrize("body", [
    pytest.param("old 07\n\n" + "x", id="leading zero"),
    pytest.param("old -1\n\n" + "x", id="negative"),
    pytest.param("new 7\n\n" + "x", id="not old"),
    pytest.param("old 7\nnot base64!\n\nx", id="bad proof line"),
    pytest.param("old 7\nAAAA\n\nx", id="short hash"),
    pytest.param("old 7\n" + "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n" * 64 + "\nx",
                 id="64 proof lines"),
    pytest.param("old 7\n", id="no checkpoint"),
])
def test_parse_refuses_malformed_requests(body: str) -> None:
    with pytest.raises(BadWitnessRequest):
        parse_add_checkpoint(body)
