"""RFC 9162 (RFC 6962) Merkle tree hashing, proofs and their verification.

The audit log's transparency tree: a leaf is ``SHA-256(0x00 || data)``, an inner node
``SHA-256(0x01 || left || right)``, and a tree of ``n`` leaves splits at the largest power of
two below ``n``. Proof generation works on all the leaf hashes of the tree (the store keeps
them); verification needs only the proof, so a client can check a log without the log.

A proof does not pin the tree size by itself (the same path can fit a few sizes): trust a
size only from a signed checkpoint.

Pure: no I/O. Generation costs O(n) hashes (each step down the tree hashes a part the others
do not touch); verification costs O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: the hash of the empty string


class ProofError(ValueError):
    """A proof, or the sizes and hashes it is checked against, does not verify."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a tree given by its leaf hashes, in order.

    Pairs neighbours level by level and lifts an unpaired last node unchanged: that builds
    exactly RFC 9162's left-heavy tree, without recursion.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path (RFC 9162 §2.1.3.1) of leaf ``index`` in the tree of ``leaf_hashes``.

    Ordered from the leaf's sibling up to the root's other child, as verifiers expect.
    """
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(leaf_hashes[lo + k:hi]))
            hi = lo + k
        else:
            path.append(root(leaf_hashes[lo:lo + k]))
            lo += k
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The consistency proof (RFC 9162 §2.1.4.1) from the first ``old_size`` leaves to all.

    Empty when ``old_size`` is 0 or the whole tree: nothing needs proving then.
    """
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise ValueError(f"old size {old_size} is outside 0..{size}")
    if old_size in (0, size):
        return []
    proof: list[bytes] = []
    lo, hi, m = 0, size, old_size
    old_is_whole_subtree = True  # SUBPROOF's flag b: the old tree is this subtree so far
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(root(leaf_hashes[lo + k:hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo:lo + k]))
            lo += k
            m -= k
            old_is_whole_subtree = False
    if not old_is_whole_subtree:
        proof.append(root(leaf_hashes[lo:hi]))
    proof.reverse()
    return proof


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not a {HASH_SIZE}-byte SHA-256 hash")


def _check_size(what: str, value: int) -> None:
    if value < 0:
        raise ProofError(f"{what} {value} is negative")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that ``leaf_hash`` is the hash of leaf ``index`` of the tree ``(size, root)``.

    The algorithm of RFC 9162 §2.1.3.2. Returns nothing; raises ``ProofError`` saying why.
    """
    _check_size("index", index)
    _check_size("tree size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    for i, p in enumerate(proof):
        _check_hash(f"proof element {i}", p)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof has {len(proof)} hashes, more than the tree "
                             f"of size {size} needs for leaf {index}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, fewer than the tree "
                         f"of size {size} needs for leaf {index}")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root hash "
                         f"of the tree of size {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check that the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    The algorithm of RFC 9162 §2.1.4.2, which covers ``0 < old_size < new_size``; outside
    it, as in transparency-dev/merkle: equal sizes need an empty proof and equal roots, and
    an ``old_size`` of 0 is refused (every tree extends the empty one, so a check against
    it proves nothing; a witness handles that case itself). Raises ``ProofError``.
    """
    _check_size("old size", old_size)
    _check_size("new size", new_size)
    if new_size < old_size:
        raise ProofError(f"new size {new_size} is smaller than old size {old_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    _check_hash("old root hash", old_root)
    _check_hash("new root hash", new_root)
    for i, p in enumerate(proof):
        _check_hash(f"proof element {i}", p)
    if old_size == new_size:
        if proof:
            raise ProofError(f"sizes are equal ({old_size}) but the proof is not empty")
        if old_root != new_root:
            raise ProofError(f"sizes are equal ({old_size}) but the root hashes differ")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {old_size} to {new_size}")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from size {old_size} to {new_size} has "
                             f"{len(proof)} hashes, more than it needs")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from size {old_size} to {new_size} has "
                         f"{len(proof)} hashes, fewer than it needs")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the root hash of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the root hash of size {new_size}")
