"""Signed notes, checkpoints and cosignatures against published vectors and specs."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gpuplane.governance.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    BAD_KEY,
    BAD_SIGNATURE,
    MALFORMED,
    UNVERIFIED,
    Checkpoint,
    NoteError,
    Verifier,
    cosign,
    key_id,
    make_signer,
    make_verifier,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    signer_key,
    unverified_text,
    verifier_from_pem,
    verifier_key,
    verify_cosignature,
)

# Published test vectors of golang.org/x/mod, sumdb/note/note_test.go (TestNewVerifier,
# TestNewSigner, TestSign, TestOpen) and its package documentation.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
             "XgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovT"
             "G01oOTGwnWLox33WWd1RvMc+QQ=\n")

# Published example of C2SP signed-note (signed-note.md, "Verifier keys" example).
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnag"
             "v1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")

# Published examples of C2SP tlog-checkpoint and tlog-cosignature (the witness's public key
# is not published, so its signature cannot be checked; its layout can).
C2SP_CHECKPOINT = ("example.com/behind-the-sofa\n20852163\n"
                   "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
C2SP_COSIGNATURE = ("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
                    "qhf5nNo0xUe+mbIUBkBIfZ+qnA==")
C2SP_COSIGNED_MESSAGE = ("cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n"
                         "20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")


def test_go_vector_keys_parse_with_their_key_hash() -> None:
    signer = parse_signer_key(PETER_SKEY)
    verifier = parse_verifier_key(PETER_VKEY)
    assert signer.name == verifier.name == "PeterNeumann"
    assert signer.key_id == verifier.key_id == 0xC74F20A3
    assert verifier.alg == ALG_ED25519
    assert key_id("PeterNeumann", ALG_ED25519, verifier.public_key) == 0xC74F20A3
    assert signer.private_key.public_key().public_bytes_raw() == verifier.public_key


def test_go_vector_key_strings_are_reproduced() -> None:
    signer = parse_signer_key(PETER_SKEY)
    assert signer_key("PeterNeumann", signer.private_key) == PETER_SKEY
    assert verifier_key("PeterNeumann", signer.private_key.public_key()) == PETER_VKEY


def test_go_vector_signature_is_reproduced() -> None:
    note = sign_note(TEXT, [parse_signer_key(PETER_SKEY)])
    assert note == TEXT + "\n" + PETER_SIG


def test_go_vector_note_opens() -> None:
    text, names = open_note(TEXT + "\n" + PETER_SIG, [parse_verifier_key(PETER_VKEY)])
    assert (text, names) == (TEXT, ["PeterNeumann"])


def test_signatures_of_unknown_keys_are_ignored() -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter, enoch = parse_verifier_key(PETER_VKEY), parse_verifier_key(ENOCH_VKEY)
    assert open_note(note, [peter])[1] == ["PeterNeumann"]
    assert open_note(note, [peter, enoch])[1] == ["PeterNeumann", "EnochRoot"]
    assert open_note(note, [enoch])[1] == ["EnochRoot"]


def test_duplicate_signatures_name_the_signer_once() -> None:
    note = TEXT + "\n" + PETER_SIG + PETER_SIG
    assert open_note(note, [parse_verifier_key(PETER_VKEY)])[1] == ["PeterNeumann"]


def test_c2sp_example_note_opens() -> None:
    verifier = parse_verifier_key(C2SP_VKEY)
    assert verifier.key_id == 0x530D903A
    assert open_note(C2SP_NOTE, [verifier]) == ("This is an example message.\n",
                                                ["example.com/foo"])


def _reason(call, *args) -> str:  # noqa: ANN001
    with pytest.raises(NoteError) as info:
        call(*args)
    return info.value.reason


def test_no_known_key_is_unverified() -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert _reason(open_note, note, []) == UNVERIFIED
    other = make_verifier("PeterNeumann", Ed25519PrivateKey.generate().public_key())
    assert _reason(open_note, note, [other]) == UNVERIFIED  # same name, other key ID


def test_two_keys_with_one_name_and_key_id_are_ambiguous() -> None:
    peter = parse_verifier_key(PETER_VKEY)
    twin = Verifier(peter.name, peter.key_id, ALG_ED25519, bytes(32))
    assert _reason(open_note, TEXT + "\n" + PETER_SIG, [peter, twin]) == BAD_KEY
    assert open_note(TEXT + "\n" + PETER_SIG, [peter, peter])[1] == ["PeterNeumann"]


def test_tampered_text_is_a_bad_signature() -> None:
    note = TEXT.replace("answer", "Answer") + "\n" + PETER_SIG
    assert _reason(open_note, note, [parse_verifier_key(PETER_VKEY)]) == BAD_SIGNATURE


def test_go_vector_corrupted_signature_is_a_bad_signature() -> None:
    note = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    assert _reason(open_note, note, [parse_verifier_key(PETER_VKEY)]) == BAD_SIGNATURE


def test_wrong_key_under_the_right_name_and_key_hash_is_a_bad_signature() -> None:
    peter = parse_verifier_key(PETER_VKEY)
    impostor_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    impostor = Verifier(peter.name, peter.key_id, ALG_ED25519, impostor_key)
    assert _reason(open_note, TEXT + "\n" + PETER_SIG, [impostor]) == BAD_SIGNATURE


def test_wrong_key_hash_in_the_signature_is_not_a_known_key() -> None:
    payload = base64.b64decode(PETER_SIG.split()[-1])
    wrong = base64.b64encode(bytes([payload[0] ^ 1]) + payload[1:]).decode()
    note = TEXT + "\n\u2014 PeterNeumann " + wrong + "\n"
    assert _reason(open_note, note, [parse_verifier_key(PETER_VKEY)]) == UNVERIFIED


@pytest.mark.parametrize("note", [
    pytest.param(TEXT, id="missing signature"),
    pytest.param(TEXT + "\n", id="blank line, no signature"),
    pytest.param(TEXT + "\n" + PETER_SIG[:-1], id="no final newline"),
    pytest.param("\x01" + TEXT + "\n" + PETER_SIG, id="control character"),
    pytest.param(TEXT + "\n\u2014 Bad Name " + PETER_SIG.split()[-1] + "\n", id="bad name"),
    pytest.param(TEXT + "\n" + PETER_SIG + "Unexpected line.\n", id="unexpected line"),
    pytest.param(TEXT + "\n- PeterNeumann " + PETER_SIG.split()[-1] + "\n", id="hyphen"),
    pytest.param(TEXT + "\n\u2014 PeterNeumann AAAA\n", id="signature too short"),
    pytest.param(TEXT + "\n\u2014 PeterNeumann !!!!\n", id="not base64"),
    pytest.param(TEXT + "\n" + PETER_SIG * 101, id="too many signatures"),
])
def test_go_vector_malformed_notes(note: str) -> None:
    assert _reason(open_note, note, [parse_verifier_key(PETER_VKEY)]) == MALFORMED


def test_go_vector_key_manglings_are_refused() -> None:
    for key, parse in ((PETER_VKEY, parse_verifier_key), (PETER_SKEY, parse_signer_key)):
        subs = {key[i:j] for i in range(len(key)) for j in range(i + 1, len(key) + 1)}
        bumps = {key[:i] + chr(ord(key[i]) + 1) + key[i + 1:] for i in range(len(key))}
        for bad in (subs | bumps) - {key}:
            with pytest.raises(NoteError):
                parse(bad)


@pytest.mark.parametrize("vkey", [
    "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
    "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
], ids=["wrong key length", "unknown algorithm"])
def test_go_vector_bad_verifier_keys(vkey: str) -> None:
    assert _reason(parse_verifier_key, vkey) == BAD_KEY


def test_sign_refuses_text_without_final_newline() -> None:
    assert _reason(sign_note, "abc", [parse_signer_key(PETER_SKEY)]) == MALFORMED


def test_verifier_from_pem_matches_the_raw_key() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert verifier_from_pem("log.example/a", pem) == make_verifier("log.example/a",
                                                                     key.public_key())
    assert _reason(verifier_from_pem, "log.example/a", b"not pem") == BAD_KEY


def test_round_trip_with_a_fresh_key() -> None:
    key = Ed25519PrivateKey.generate()
    signer = parse_signer_key(signer_key("gpuplane.example/audit", key))
    verifier = parse_verifier_key(verifier_key("gpuplane.example/audit", key.public_key()))
    note = sign_note("hello\n", [signer])
    assert open_note(note, [verifier]) == ("hello\n", ["gpuplane.example/audit"])
    assert unverified_text(note) == "hello\n"


def test_checkpoint_body_and_parse_round_trip() -> None:
    cp = Checkpoint("example.com/behind-the-sofa", 20852163,
                    base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert cp.body() == C2SP_CHECKPOINT
    assert parse_checkpoint(C2SP_CHECKPOINT) == cp
    with_ext = Checkpoint(cp.origin, 0, bytes(32), ("ext one", "ext two"))
    assert parse_checkpoint(with_ext.body()) == with_ext


@pytest.mark.parametrize("text", [
    pytest.param("o\n007\n" + base64.b64encode(bytes(32)).decode() + "\n", id="leading zeros"),
    pytest.param("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="negative"),
    pytest.param("o\n+1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="plus sign"),
    pytest.param("o\n 1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="space"),
    pytest.param("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", id="31-byte root"),
    pytest.param("o\n1\n" + base64.b64encode(bytes(32)).decode()[:-1] + "\n", id="no padding"),
    pytest.param("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n", id="non-canonical"),
    pytest.param("o\n1\n" + base64.b64encode(bytes(32)).decode(), id="no final newline"),
    pytest.param("o\n1\n", id="no root line"),
    pytest.param("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="empty origin"),
    pytest.param("o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n", id="empty ext"),
])
def test_checkpoint_parsing_is_strict(text: str) -> None:
    assert _reason(parse_checkpoint, text) == MALFORMED


def test_cosignature_signs_the_message_the_spec_shows() -> None:
    key = Ed25519PrivateKey.generate()
    line = cosign(C2SP_CHECKPOINT, key, "witness.example.com/w1", 1679315147)
    name, payload = line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(payload)
    published = base64.b64decode(C2SP_COSIGNATURE)
    assert name == "witness.example.com/w1"
    assert len(raw) == len(published) == 4 + 8 + 64
    assert raw[4:12] == published[4:12] == (1679315147).to_bytes(8, "big")
    public = key.public_key()
    assert int.from_bytes(raw[:4], "big") == key_id("witness.example.com/w1",
                                                    ALG_COSIGNATURE_V1, public.public_bytes_raw())
    public.verify(raw[12:], C2SP_COSIGNED_MESSAGE.encode())  # raises if not that message


def test_cosignature_round_trip_returns_the_timestamp() -> None:
    log_key, witness_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_note(C2SP_CHECKPOINT, [make_signer("example.com/behind-the-sofa", log_key)])
    cosigned = note + cosign(C2SP_CHECKPOINT, witness_key, "w.example/1", 1700000000)
    witness = make_verifier("w.example/1", witness_key.public_key(), ALG_COSIGNATURE_V1)
    assert verify_cosignature(cosigned, witness) == 1700000000
    vkey = verifier_key("w.example/1", witness_key.public_key(), ALG_COSIGNATURE_V1)
    assert parse_verifier_key(vkey) == witness
    log = make_verifier("example.com/behind-the-sofa", log_key.public_key())
    assert open_note(cosigned, [log, witness])[1] == ["example.com/behind-the-sofa",
                                                       "w.example/1"]


def test_cosignature_and_note_key_ids_differ_for_one_key() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    assert (make_verifier("w", key).key_id
            != make_verifier("w", key, ALG_COSIGNATURE_V1).key_id)


def test_cosignature_with_a_changed_timestamp_is_a_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    line = cosign(C2SP_CHECKPOINT, key, "w.example/1", 1700000000)
    raw = bytearray(base64.b64decode(line.split(" ")[-1]))
    raw[11] ^= 1
    forged = f"\u2014 w.example/1 {base64.b64encode(bytes(raw)).decode()}\n"
    witness = make_verifier("w.example/1", key.public_key(), ALG_COSIGNATURE_V1)
    assert _reason(verify_cosignature, C2SP_CHECKPOINT + "\n" + forged, witness) == BAD_SIGNATURE


def test_cosignature_of_another_checkpoint_is_a_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    line = cosign(C2SP_CHECKPOINT, key, "w.example/1", 1700000000)
    other = C2SP_CHECKPOINT.replace("20852163", "20852164")
    witness = make_verifier("w.example/1", key.public_key(), ALG_COSIGNATURE_V1)
    assert _reason(verify_cosignature, other + "\n" + line, witness) == BAD_SIGNATURE


def test_missing_cosignature_is_unverified() -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_note(C2SP_CHECKPOINT, [make_signer("example.com/behind-the-sofa", key)])
    witness = make_verifier("w.example/1", key.public_key(), ALG_COSIGNATURE_V1)
    assert _reason(verify_cosignature, note, witness) == UNVERIFIED


def test_cosignature_needs_a_cosigner_key_and_a_checkpoint() -> None:
    key = Ed25519PrivateKey.generate()
    plain = make_verifier("w.example/1", key.public_key())
    assert _reason(verify_cosignature, C2SP_CHECKPOINT + "\n" + PETER_SIG, plain) == BAD_KEY
    assert _reason(cosign, "not a checkpoint\n", key, "w.example/1", 1) == MALFORMED
    assert _reason(cosign, C2SP_CHECKPOINT, key, "w.example/1", 1 << 63) == MALFORMED
