"""RFC 9162 Merkle tree: published test vectors, then properties over random trees."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuplane.governance.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# Published test vectors of github.com/transparency-dev/merkle (commit 417fb0c):
# testonly/constants.go (LeafInputs, NodeHashes level 0, RootHashes) and
# cmd/proofgen/main.go (inclusionProofs, consistencyProofs; the generator of the golden
# probes in testdata/). proofgen numbers leaves from 1; LEAF_INDEX below is 0-based.
LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
LEAF_HASHES = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
)]
ROOTS = [bytes.fromhex(h) for h in (  # ROOTS[n] is the root of the first n leaves
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = bytes.fromhex
INCLUSION_PROOFS = [  # (LEAF_INDEX, tree size, proof)
    (0, 1, []),
    (0, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]
CONSISTENCY_PROOFS = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]
SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")  # proofgen's


def test_leaf_hashes_match_the_published_vectors() -> None:
    assert [leaf_hash(d) for d in LEAF_INPUTS] == LEAF_HASHES


def test_roots_of_every_size_match_the_published_vectors() -> None:
    assert [root(LEAF_HASHES[:n]) for n in range(9)] == ROOTS


def test_empty_tree_root_is_the_hash_of_the_empty_string() -> None:
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_node_hash_prefixes_0x01() -> None:
    assert node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[2]


@pytest.mark.parametrize("index,size,proof", INCLUSION_PROOFS)
def test_inclusion_proofs_match_the_published_vectors(index: int, size: int,
                                                      proof: list[bytes]) -> None:
    assert inclusion_proof(LEAF_HASHES[:size], index) == proof
    verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize("old,new,proof", CONSISTENCY_PROOFS)
def test_consistency_proofs_match_the_published_vectors(old: int, new: int,
                                                        proof: list[bytes]) -> None:
    assert consistency_proof(LEAF_HASHES[:new], old) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _flip(h: bytes, byte: int, mask: int) -> bytes:
    return h[:byte] + bytes([h[byte] ^ mask]) + h[byte + 1:]


def _bad_inclusion_probes(index: int, size: int, proof: list[bytes], rt: bytes,
                          leaf: bytes) -> list[tuple[str, tuple]]:
    """The corruptions transparency-dev/merkle's proofgen derives from each vector."""
    probes = [
        ("index - 1", (leaf, index - 1, size, proof, rt)),
        ("index + 1", (leaf, index + 1, size, proof, rt)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, rt)),
        ("size * 2", (leaf, index, size * 2, proof, rt)),
        ("size / 2", (leaf, index, size // 2, proof, rt)),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, rt)),
        ("empty root", (leaf, index, size, proof, EMPTY_ROOT)),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*proof, b""], rt)),
        ("trailing root", (leaf, index, size, [*proof, rt], rt)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], rt)),
        ("preceding root", (leaf, index, size, [rt, *proof], rt)),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = _flip(bad[i], 0, 8)
        probes.append((f"modified proof[{i}] bit 3", (leaf, index, size, bad, rt)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], rt)))
    if len(proof) > 1:
        probes.append(("inserted component",
                       (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], rt)))
    return probes


INCLUSION_PROBES = [
    pytest.param(*args, id=f"leaf {index} of {size}: {desc}")
    for index, size, proof in INCLUSION_PROOFS
    for desc, args in _bad_inclusion_probes(index, size, proof, ROOTS[size],
                                            LEAF_HASHES[index])
] + [  # proofgen's static probes: empty and odd trees
    pytest.param(SOME_HASH, index, size, [], b"", id=f"random leaf at {index} of {size}")
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1))
] + [
    pytest.param(b"", index, size, [], EMPTY_ROOT, id=f"empty leaf at {index} of {size}")
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1))
] + [
    pytest.param(SOME_HASH, index, size, [], EMPTY_ROOT, id=f"empty root at {index} of {size}")
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1))
]


@pytest.mark.parametrize("leaf,index,size,proof,rt", INCLUSION_PROBES)
def test_corrupted_inclusion_probes_fail(leaf: bytes, index: int, size: int,
                                         proof: list[bytes], rt: bytes) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, rt)


def test_single_leaf_tree_proves_its_leaf_with_an_empty_proof() -> None:
    h = leaf_hash(b"data")
    verify_inclusion(h, 0, 1, [], h)


def _bad_consistency_probes(old: int, new: int, r1: bytes, r2: bytes,
                            proof: list[bytes]) -> list[tuple[str, tuple]]:
    probes = [
        ("old - 1", (old - 1, new, r1, r2, proof)),
        ("old + 1", (old + 1, new, r1, r2, proof)),
        ("old ^ 2", (old ^ 2, new, r1, r2, proof)),
        ("new * 2", (old, new * 2, r1, r2, proof)),
        ("new / 2", (old, new // 2, r1, r2, proof)),
        ("wrong old root", (old, new, b"WrongRoot", r2, proof)),
        ("wrong new root", (old, new, r1, b"WrongRoot", proof)),
        ("swapped roots", (old, new, r2, r1, proof)),
        ("empty proof", (old, new, r1, r2, [])),
        ("trailing garbage", (old, new, r1, r2, [*proof, b""])),
        ("trailing old root", (old, new, r1, r2, [*proof, r1])),
        ("trailing new root", (old, new, r1, r2, [*proof, r2])),
        ("preceding garbage", (old, new, r1, r2, [b"", *proof])),
        ("preceding old root", (old, new, r1, r2, [r1, *proof])),
        ("preceding new root", (old, new, r1, r2, [r2, *proof])),
        ("preceding proof[0]", (old, new, r1, r2, [proof[0], *proof])),
        ("truncated proof", (old, new, r1, r2, proof[:-1])),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = _flip(bad[i], 0, 16)
        probes.append((f"modified proof[{i}] bit 4", (old, new, r1, r2, bad)))
    return probes


DONT_CARE_1, DONT_CARE_2 = b"don't care 1", b"don't care 2"
CONSISTENCY_PROBES = [
    pytest.param(*args, id=f"{old} to {new}: {desc}")
    for old, new, proof in CONSISTENCY_PROOFS if proof
    for desc, args in _bad_consistency_probes(old, new, ROOTS[old], ROOTS[new], proof)
] + [  # proofgen's static probes
    pytest.param(0, 0, DONT_CARE_1, DONT_CARE_2, [], id="sizes equal (0), roots not"),
    pytest.param(1, 1, DONT_CARE_1, DONT_CARE_2, [], id="sizes equal (1), roots not"),
    pytest.param(0, 0, DONT_CARE_1, DONT_CARE_1, [], id="sizes equal (0), empty proof"),
    pytest.param(0, 1, DONT_CARE_1, DONT_CARE_2, [], id="old 0, new not"),
    pytest.param(1, 0, DONT_CARE_1, DONT_CARE_2, [], id="old greater than new"),
    pytest.param(2, 1, DONT_CARE_1, DONT_CARE_2, [], id="old greater than new again"),
    pytest.param(1, 2, DONT_CARE_1, DONT_CARE_2, [], id="sizes differ, proof empty"),
    pytest.param(0, 0, EMPTY_ROOT, DONT_CARE_2, [], id="roots differ, sizes 0"),
    pytest.param(1, 1, EMPTY_ROOT, DONT_CARE_2, [], id="roots differ, sizes 1"),
    pytest.param(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], id="sizes 0, proof not empty"),
    pytest.param(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], id="sizes 1, proof not empty"),
    pytest.param(0, 1, EMPTY_ROOT, DONT_CARE_2, [], id="old 0 and new 1"),
    pytest.param(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], id="old 0 proves nothing"),
    # proofgen expects success for (1, 1, DONT_CARE_2, DONT_CARE_2, []): equal sizes and
    # equal roots. We deliberately also demand 32-byte roots, so a 12-byte root is refused.
    pytest.param(1, 1, DONT_CARE_2, DONT_CARE_2, [], id="equal 12-byte roots (stricter)"),
]


@pytest.mark.parametrize("old,new,r1,r2,proof", CONSISTENCY_PROBES)
def test_corrupted_consistency_probes_fail(old: int, new: int, r1: bytes, r2: bytes,
                                           proof: list[bytes]) -> None:
    with pytest.raises(ProofError):
        verify_consistency(old, new, r1, r2, proof)


def test_equal_sizes_with_equal_roots_and_no_proof_are_consistent() -> None:
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])


def test_proof_generation_rejects_out_of_range_arguments() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAF_HASHES, 8)
    with pytest.raises(ValueError):
        inclusion_proof([], 0)
    with pytest.raises(ValueError):
        consistency_proof(LEAF_HASHES, 9)
    assert consistency_proof(LEAF_HASHES, 0) == []


def test_error_says_why() -> None:
    with pytest.raises(ProofError, match="not below the tree size"):
        verify_inclusion(LEAF_HASHES[0], 3, 3, [], ROOTS[3])
    with pytest.raises(ProofError, match="smaller than old size"):
        verify_consistency(4, 3, ROOTS[4], ROOTS[3], [])


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_every_inclusion_proof_verifies_and_any_change_breaks_it(case: tuple[int, int]) -> None:
    size, index = case
    leaves = _leaves(size)
    rt = root(leaves)
    proof = inclusion_proof(leaves, index)
    verify_inclusion(leaves[index], index, size, proof, rt)
    for i, p in enumerate(proof):
        for byte in range(len(p)):
            bad = list(proof)
            bad[i] = _flip(p, byte, 0x01)
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], index, size, bad, rt)
    for byte in range(32):
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, proof, _flip(rt, byte, 0x80))
    other_indexes = {index - 1, index + 1, index ^ 2} & set(range(size)) - {index}
    for other in other_indexes:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], other, size, proof, rt)
    for other_size in {size * 2, size // 2} - {size}:  # not any size: see test below
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, other_size, proof, rt)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, size, [*proof, rt], rt)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, proof[:-1], rt)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))))
def test_every_consistency_proof_verifies_and_any_change_breaks_it(case: tuple[int, int]
                                                                   ) -> None:
    new, old = case
    leaves = _leaves(new)
    r1, r2 = root(leaves[:old]), root(leaves)
    proof = consistency_proof(leaves, old)
    verify_consistency(old, new, r1, r2, proof)
    for i, p in enumerate(proof):
        for byte in range(len(p)):
            bad = list(proof)
            bad[i] = _flip(p, byte, 0x01)
            with pytest.raises(ProofError):
                verify_consistency(old, new, r1, r2, bad)
    for byte in range(32):
        with pytest.raises(ProofError):
            verify_consistency(old, new, _flip(r1, byte, 0x80), r2, proof)
        with pytest.raises(ProofError):
            verify_consistency(old, new, r1, _flip(r2, byte, 0x80), proof)
    for other_old in {old - 1, old + 1} - {0, old}:
        with pytest.raises(ProofError):
            verify_consistency(other_old, new, r1, r2, proof)
    for other_new in {new * 2, new // 2} - {new}:
        if other_new >= old:
            with pytest.raises(ProofError):
                verify_consistency(old, other_new, r1, r2, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, r1, r2, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(old, new, r1, r2, [*proof, r2])


def test_a_proof_alone_does_not_pin_the_tree_size() -> None:
    """Why checkpoints sign the size: leaf 0's proof in a tree of 5 also verifies as size 6,
    since both paths take the same turns. Sizes must come from a signed checkpoint."""
    leaves = _leaves(5)
    proof = inclusion_proof(leaves, 0)
    verify_inclusion(leaves[0], 0, 6, proof, root(leaves))
