"""Perceptual hashing and near-duplicate grouping, checked against brute force."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from scipy.sparse.csgraph import connected_components

from eyecatcher.images import decode_image
from eyecatcher.near_duplicates import (
    hashes_to_uint64,
    near_duplicate_components,
    perceptual_hash,
)


def brute_force_components(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    close = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= max_distance
    return connected_components(close, directed=False)[1]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


@st.composite
def hash_sets(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Random 64-bit hashes plus planted near-copies (a few flipped bits), and a distance."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    max_distance = draw(st.integers(0, 16))
    n_base = draw(st.integers(0, 150))
    base = rng.integers(0, 2**64, size=n_base, dtype=np.uint64)
    copies = []
    for value in base[: draw(st.integers(0, n_base))]:
        flips = rng.choice(64, size=int(rng.integers(0, max_distance + 3)), replace=False)
        copies.append(value ^ np.uint64(sum(1 << int(b) for b in flips)))
    # Also a few clusters sharing most bits, so that chains (A~B~C, A far from C) occur.
    for _ in range(draw(st.integers(0, 3))):
        centre = rng.integers(0, 2**64, dtype=np.uint64)
        for step in range(int(rng.integers(2, 8))):
            copies.append(centre ^ np.uint64((1 << (step * 3 % 64)) | (1 << ((step * 7) % 64))))
    hashes = np.concatenate([base, np.array(copies, dtype=np.uint64)])
    return rng.permutation(hashes), max_distance


@settings(max_examples=120, deadline=None)
@given(hash_sets())
def test_components_match_brute_force(case: tuple[np.ndarray, int]) -> None:
    hashes, max_distance = case
    labels = near_duplicate_components(hashes, max_distance)
    assert labels.shape == hashes.shape
    if len(hashes):
        assert same_partition(labels, brute_force_components(hashes, max_distance))


def test_grouping_is_transitive() -> None:
    a = 0
    b = 0b1111  # 4 bits from a
    c = 0b11111111  # 4 bits from b, 8 from a
    labels = near_duplicate_components(np.array([a, b, c, 2**64 - 1], dtype=np.uint64), 4)
    assert labels[0] == labels[1] == labels[2] != labels[3]


def test_large_pair_blocks_are_processed_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many hashes sharing chunk values: a tiny block size forces the blocked loop.
    from eyecatcher import near_duplicates

    monkeypatch.setattr(near_duplicates, "_PAIR_BLOCK", 7)
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**12, size=300, dtype=np.uint64)  # only the low bits vary
    labels = near_duplicate_components(hashes, 3)
    assert same_partition(labels, brute_force_components(hashes, 3))


@pytest.mark.parametrize("distance", [-1, 33])
def test_distance_out_of_range_is_an_error(distance: int) -> None:
    with pytest.raises(ValueError, match="max_distance"):
        near_duplicate_components(np.zeros(3, dtype=np.uint64), distance)


def test_empty_input_gives_no_labels() -> None:
    assert near_duplicate_components(np.array([], dtype=np.uint64), 8).size == 0


def test_hex_hashes_round_trip_and_bad_values_are_rejected() -> None:
    assert hashes_to_uint64(["ffffffffffffffff", "0000000000000001"]).tolist() == [2**64 - 1, 1]
    with pytest.raises(ValueError, match="hex"):
        hashes_to_uint64(["abc"])


def _scene(seed: int) -> Image.Image:
    """A smooth, photo-like synthetic scene: a gradient with a few large shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    base = 127 + 100 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(40, 90))
    pixels = np.stack([base, base[::-1], np.full_like(base, rng.uniform(0, 255))], axis=-1)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.integers(0, 280), rng.integers(0, 200)
        r = int(rng.integers(20, 60))
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
        )
    return image


def _reencode(image: Image.Image, fmt: str, **kwargs) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return decode_image(buffer.getvalue())


def _distance(a: Image.Image, b: Image.Image) -> int:
    first, second = hashes_to_uint64([perceptual_hash(a), perceptual_hash(b)])
    return int(np.bitwise_count(first ^ second))


@pytest.mark.parametrize("seed", range(5))
def test_harmless_copies_are_near_duplicates_and_other_scenes_are_not(seed: int) -> None:
    scene = _scene(seed)
    copies = [
        _reencode(scene, "JPEG", quality=70),
        _reencode(scene.resize((160, 120)), "PNG"),
        _reencode(scene.resize((640, 480)), "WEBP", quality=80),
        _reencode(scene.convert("L").convert("RGB"), "PNG"),
    ]
    for copy in copies:
        assert _distance(scene, copy) <= 8  # the default max_distance
    for other in range(5, 10):
        assert _distance(scene, _scene(other)) > 8


def test_draft_decoding_is_smaller_upright_and_hashes_alike() -> None:
    scene = _scene(1).resize((2000, 1500))
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    scene.save(buffer, "JPEG", quality=90, exif=exif)
    data = buffer.getvalue()

    full = decode_image(data)
    small = decode_image(data, draft_min_side=256)
    assert full.size == (1500, 2000)  # upright in both cases
    assert small.size[0] < full.size[0] and min(small.size) >= 256
    assert small.size[1] / small.size[0] == pytest.approx(2000 / 1500, rel=0.01)
    assert _distance(full, small) <= 2

    png = io.BytesIO()
    scene.save(png, "PNG")
    assert decode_image(png.getvalue(), draft_min_side=256).size == (2000, 1500)  # JPEG only
