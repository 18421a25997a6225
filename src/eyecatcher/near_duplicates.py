"""Perceptual hashes and transitive near-duplicate groups.

Two images are near-duplicates when their 64-bit perceptual hashes (pHash, DCT-based) differ in
at most ``max_distance`` bits; groups are the connected components of that relation, so a chain
A~B~C puts A, B and C together even when A and C are far apart.

Finding all pairs within ``d`` bits uses the pigeonhole principle (multi-index hashing): split
the 64 bits into ``d + 1`` disjoint chunks; two hashes within ``d`` bits agree exactly on at least
one chunk. So only hashes sharing a chunk value are compared, which for tens of thousands of
images is a few candidate pairs per image instead of all N² pairs (``benchmarks/`` measures it).
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Bits of the perceptual hash (``imagehash.phash`` with ``hash_size=8``).
HASH_BITS = 64

#: Smallest side JPEGs are decoded at for hashing (see ``decode_image(draft_min_side=...)``).
#: The split and the drift populations hash at the same size, so their hashes compare.
HASH_DECODE_MIN_SIDE = 256

#: Candidate pairs materialised at once; bounds memory when a chunk value is very common.
_PAIR_BLOCK = 2_000_000


def perceptual_hash(image: Image.Image) -> str:
    """Return the 64-bit pHash of ``image`` as 16 hex digits.

    Args:
        image: A decoded image (see :func:`eyecatcher.images.decode_image`).

    Returns:
        The hash as a hex string, the format ``imagehash`` prints and parses.
    """
    return str(imagehash.phash(image, hash_size=8))


def hashes_to_uint64(hex_hashes: list[str] | np.ndarray) -> np.ndarray:
    """Parse 16-digit hex hashes into an unsigned 64-bit array.

    Args:
        hex_hashes: Hashes as written by :func:`perceptual_hash`.

    Returns:
        A ``uint64`` array of the same length.

    Raises:
        ValueError: When a value is not 16 hex digits.
    """
    values = []
    for text in hex_hashes:
        if not isinstance(text, str) or len(text) != 16:
            raise ValueError(f"not a 64-bit hex perceptual hash: {text!r}")
        values.append(int(text, 16))
    return np.array(values, dtype=np.uint64)


def _chunks(max_distance: int) -> list[tuple[int, int]]:
    """Split 64 bits into ``max_distance + 1`` near-equal (shift, width) chunks."""
    n = max_distance + 1
    widths = [HASH_BITS // n + (1 if i < HASH_BITS % n else 0) for i in range(n)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _close_pairs(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j in bucket order) of distinct ``values`` within ``max_distance`` bits."""
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    n = len(values)
    for shift, width in _chunks(max_distance):
        mask = np.uint64((1 << width) - 1)
        keys = (values >> np.uint64(shift)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        boundaries = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
        run_ends = np.repeat(boundaries[1:], np.diff(boundaries))
        # Each position is paired with every later position of its run (same chunk value).
        partners = run_ends - np.arange(n) - 1
        cumulative = np.cumsum(partners)
        start = 0
        while start < n:
            budget = (cumulative[start - 1] if start else 0) + _PAIR_BLOCK
            stop = max(start + 1, int(np.searchsorted(cumulative, budget, side="right")))
            positions = np.arange(start, stop)
            counts = partners[start:stop]
            total = int(counts.sum())
            if total:
                left = np.repeat(positions, counts)
                offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
                right = left + 1 + offsets
                a, b = order[left], order[right]
                close = np.bitwise_count(values[a] ^ values[b]) <= max_distance
                firsts.append(a[close])
                seconds.append(b[close])
            start = stop
    if not firsts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def near_duplicate_components(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Label each hash with its near-duplicate component (transitive closure).

    Args:
        hashes: ``uint64`` perceptual hashes, one per image (repeats allowed).
        max_distance: Largest Hamming distance, in bits, at which two images are near-duplicates
            (0 groups identical hashes only).

    Returns:
        An ``int64`` array of component labels, aligned with ``hashes``; equal labels mean the
        same group. Labels are arbitrary integers: name groups by a member, not by label.

    Raises:
        ValueError: When ``max_distance`` is outside ``[0, 32]`` (beyond that, "near" covers
            half the hash space and the index degenerates into comparing everything).
    """
    if not 0 <= int(max_distance) <= HASH_BITS // 2:
        raise ValueError(f"max_distance must be between 0 and {HASH_BITS // 2}, got {max_distance}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    if hashes.size == 0:
        return np.empty(0, dtype=np.int64)
    # Identical hashes are joined for free; only distinct values go through the index.
    unique, inverse = np.unique(hashes, return_inverse=True)
    first, second = _close_pairs(unique, int(max_distance))
    graph = coo_matrix(
        (np.ones(len(first), dtype=np.int8), (first, second)), shape=(len(unique), len(unique))
    )
    _, labels = connected_components(graph, directed=False)
    return labels[inverse.reshape(-1)].astype(np.int64)
