"""Limits hold for every frame, before any work that scales with it (issue #24, item 1).

Each hostile file is cheap to send and, before, cost seconds to minutes of CPU after the first
frame's checks had passed. Each must now be refused at once with its reason code: the
``< HANG_GUARD_S`` bounds below only catch a hang (the costs are measured in
``benchmarks/bench_hostile_inputs.py``), and where it matters the test checks that Pillow's
compositing ``seek`` was never reached.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable, Iterator

import pytest
from PIL import GifImagePlugin, Image, PngImagePlugin

from eyecatcher import images
from eyecatcher.images import (
    DEFAULT_MAX_PIXELS,
    Deadline,
    DecodeLimits,
    ImageRejectedError,
    decode_for_model,
    decode_image,
    gif_frame_canvases,
    validate_image,
)
from tests.image_factory import (
    animation_many_frames,
    animation_with_late_frame,
    apng_big_canvas_many_frames,
    gif_big_canvas_many_frames,
    gif_growing_canvas,
    good_images,
    heif_with_later_image,
    mpo_with_later_image,
    tiff_with_later_page,
    webp_big_canvas,
)

#: Not a benchmark: a refusal that takes this long has walked or decoded what it must not.
HANG_GUARD_S = 5.0
MIN_SIDE = 64


@pytest.fixture
def seeks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every GIF and PNG ``seek`` past frame 0 (the calls that composite a canvas)."""
    calls: list[tuple[str, int]] = []
    for plugin in (GifImagePlugin.GifImageFile, PngImagePlugin.PngImageFile):
        original = plugin.seek

        def recording(self, frame, _original=original, _name=plugin.format):
            if frame:
                calls.append((_name, frame))
            return _original(self, frame)

        monkeypatch.setattr(plugin, "seek", recording)
    yield calls


def refused(decode: Callable[[bytes], object], data: bytes) -> ImageRejectedError:
    started = time.process_time()
    with pytest.raises(ImageRejectedError) as caught:
        decode(data)
    assert time.process_time() - started < HANG_GUARD_S
    return caught.value


def for_model(limits: DecodeLimits | None = None) -> Callable[[bytes], object]:
    return lambda data: decode_for_model(data, min_side=MIN_SIDE, limits=limits)


def test_pillow_refuses_above_the_projects_own_limit_not_its_default() -> None:
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS
    # A caller that opens images without this module still meets the project's limit.
    bomb = io.BytesIO()
    Image.new("1", (11_000, 10_000)).save(bomb, "PNG")  # 110 Mpx: over twice 50 M
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.getvalue()))


# -- GIF: counted from its blocks, never by compositing ------------------------------------------


def test_issue_gif_big_canvas_and_1000_frames_is_refused_before_any_frame_is_composited(
    seeks: list[tuple[str, int]],
) -> None:
    data = gif_big_canvas_many_frames()  # 7000 x 7000, 1,000 1x1 frames, ~23 kB
    assert len(data) < 30_000
    error = refused(for_model(), data)
    assert error.reason == "decode_budget"
    assert seeks == []
    # Ingestion counts the same frames without compositing them either.
    started = time.process_time()
    assert validate_image(data, min_side=1).n_frames == 1000
    assert time.process_time() - started < HANG_GUARD_S
    assert seeks == []


def test_a_gif_canvas_grown_by_a_later_frame_is_refused_like_an_oversized_first_frame(
    seeks: list[tuple[str, int]],
) -> None:
    data = gif_growing_canvas()  # header 100 x 100, frame 1 grows it to 9000 x 9000
    assert Image.open(io.BytesIO(data)).size == (100, 100)
    for decode in (for_model(), validate_image, decode_image):
        error = refused(decode, data)
        assert error.reason == "decompression_bomb"
        assert "frame 1" in error.detail and "9000x9000" in error.detail
    assert seeks == []
    # Below the limit the same file is fine: the canvas, not the format, is refused.
    assert len(decode_for_model(gif_growing_canvas(grown_side=2000), min_side=MIN_SIDE)) == 2


def test_gif_block_walk_agrees_with_pillows_reader() -> None:
    late, _ = animation_with_late_frame("GIF", frames=12)
    grown = gif_growing_canvas(header_side=100, grown_side=300)
    junk = grown[:-1] + b"\x00\x07junk" + grown[-1:]  # stray bytes Pillow's reader skips
    for data in (good_images()["animated.gif"], late, grown, junk):
        image = Image.open(io.BytesIO(data))
        sizes = []
        for frame in itertools.count():
            try:
                image.seek(frame)
            except EOFError:
                break
            sizes.append(image.size)
        assert gif_frame_canvases(data, cap=1000) == sizes
    assert len(gif_frame_canvases(gif_big_canvas_many_frames(side=10, frames=50), cap=9)) == 10


def test_a_gif_cut_inside_a_block_is_truncated() -> None:
    data = gif_big_canvas_many_frames(side=100, frames=20)
    with pytest.raises(ImageRejectedError) as caught:
        gif_frame_canvases(data[:-12], cap=1000)
    assert caught.value.reason == "truncated"


# -- later pages and images: each one's own size --------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (tiff_with_later_page, "extreme_aspect_ratio"),
        (lambda: tiff_with_later_page(later=(3000, 3000)), "decompression_bomb"),
        (mpo_with_later_image, "extreme_aspect_ratio"),
        (heif_with_later_image, "extreme_aspect_ratio"),
    ],
    ids=["tiff_page2_500_to_1", "tiff_page2_9mpx", "mpo_image2_40_to_1", "heif_image2_42_to_1"],
)
def test_a_later_page_or_image_is_checked_against_its_own_size(make, reason) -> None:
    data = make()
    first = Image.open(io.BytesIO(data))
    assert first.size == (120, 96)  # the first page alone passes every limit
    error = refused(for_model(DecodeLimits(max_pixels=5_000_000)), data)
    assert error.reason == reason
    assert error.detail.startswith("frame 1: canvas ")


def test_a_later_page_above_max_pixels_is_refused_by_ingestion_too() -> None:
    data = tiff_with_later_page(later=(3000, 3000))
    for decode in (validate_image, decode_image):
        error = refused(lambda d, decode=decode: decode(d, max_pixels=5_000_000), data)
        assert error.reason == "decompression_bomb"


# -- animations whose count is in a header ---------------------------------------------------------


def test_an_apng_with_a_big_canvas_and_1000_frames_is_refused_before_any_frame(
    seeks: list[tuple[str, int]],
) -> None:
    data = apng_big_canvas_many_frames()  # 7000 x 7000, 1,000 frames, ~70 kB
    assert Image.open(io.BytesIO(data)).n_frames == 1000
    assert refused(for_model(), data).reason == "decode_budget"
    assert seeks == []


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_more_frames_than_max_frames_in_a_header_is_refused(fmt: str) -> None:
    assert refused(for_model(), animation_many_frames(fmt, frames=1001)).reason == (
        "too_many_frames"
    )


def test_a_webp_animation_over_the_decode_budget_is_refused_from_its_index() -> None:
    data = webp_big_canvas(side=1000, frames=17)  # 17 M pixels to decode
    limits = DecodeLimits(max_pixels=2_000_000, max_decode_pixels=10_000_000)
    assert refused(for_model(limits), data).reason == "decode_budget"
    # Within the budget it decodes, first and last frames included.
    assert len(decode_for_model(data, min_side=MIN_SIDE)) == 8


# -- after every seek: a header that lies costs at most one frame --------------------------------


def test_the_real_canvas_after_each_seek_is_checked_even_if_the_survey_was_fooled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the survey had believed the header: every frame on the 100 x 100 canvas.
    def header_only(image, data, cap, deadline=None):
        return [image.size] * len(gif_frame_canvases(data, cap))

    monkeypatch.setattr(images, "_frame_canvases", header_only)
    error = refused(for_model(), gif_growing_canvas(grown_side=7500))  # 56 Mpx at frame 1
    assert error.reason == "decompression_bomb"
    assert "frame 1" in error.detail
    # The remaining budget is checked against the real canvases too.
    limits = DecodeLimits(max_pixels=4_000_000, max_decode_pixels=4_000_000)
    error = refused(for_model(limits), gif_growing_canvas(grown_side=2000))  # 4 Mpx at frame 1
    assert error.reason == "decode_budget"


# -- the deadline between frames ------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_deadline_stops_an_animation_between_frames() -> None:
    animation, _ = animation_with_late_frame("GIF", frames=12)
    # Read once when set (0.2 s, so it expires at 1.2 s), then once per frame: frames 0-3 pass.
    deadline = Deadline(1.0, clock=FakeClock(0.2))
    with pytest.raises(ImageRejectedError) as caught:
        decode_for_model(animation, min_side=MIN_SIDE, deadline=deadline)
    assert caught.value.reason == "deadline_exceeded"
    assert "before frame 4 was decoded" in caught.value.detail
    # With time left, the same file decodes.
    assert len(decode_for_model(animation, min_side=MIN_SIDE, deadline=Deadline(60))) == 8


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadline(0)
