"""Unit tests for the shared image module: validation reasons and normalisation to RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eyecatcher.images import ImageRejectedError, decode_image, to_rgb, validate_image
from tests.image_factory import bad_files, encode, good_images, many_page_tiff


@pytest.mark.parametrize("name", sorted(good_images()))
def test_every_supported_format_and_mode_decodes_to_rgb(name: str) -> None:
    data = good_images()[name]
    info = validate_image(data)
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == (info.width, info.height)


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_files_are_rejected_with_their_reason(name: str) -> None:
    data, reason = bad_files()[name]
    with pytest.raises(ImageRejectedError) as excinfo:
        validate_image(data)
    assert excinfo.value.reason == reason
    if reason in {"too_small", "too_many_frames"}:
        # Small or many-paged but intact images still decode (their first frame): only
        # ingestion and serving set these limits.
        assert decode_image(data).mode == "RGB"
    else:
        with pytest.raises(ImageRejectedError):
            decode_image(data)


def test_exif_orientation_is_applied() -> None:
    data = good_images()["exif_rotated.jpg"]
    # The stored pixels are 120x96; orientation 6 means "rotate 90°" so the upright image is 96x120.
    assert Image.open(io.BytesIO(data)).size == (120, 96)
    assert decode_image(data).size == (96, 120)
    assert validate_image(data).width == 96


def test_transparency_is_composited_on_white_not_black() -> None:
    rgba = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((5, 5)) == (255, 255, 255)
    data = encode(Image.new("LA", (100, 100), (0, 0)), "PNG")
    assert decode_image(data).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grayscale_keeps_its_contrast() -> None:
    ramp = np.linspace(0, 65535, 100 * 100).reshape(100, 100).astype(np.uint16)
    image = decode_image(encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (100, 100), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue())
    red, _, blue = image.getpixel((50, 50))
    assert red > 200 and blue < 50


def test_frame_cap_is_configurable_and_the_first_page_decodes_anyway() -> None:
    assert validate_image(many_page_tiff(pages=5), min_side=1).n_frames == 5
    long_tiff = many_page_tiff(pages=300)
    assert validate_image(long_tiff, min_side=1, max_frames=300).n_frames == 300
    with pytest.raises(ImageRejectedError, match="too_many_frames"):
        validate_image(long_tiff, min_side=1, max_frames=299)
    # Decoding needs only page 0, whatever the page count.
    assert decode_image(many_page_tiff(pages=20_000)).size == (8, 8)


def test_pixel_budget_is_configurable() -> None:
    data = encode(Image.new("RGB", (1000, 1000)), "PNG")
    assert validate_image(data).width == 1000
    with pytest.raises(ImageRejectedError, match="decompression_bomb"):
        validate_image(data, max_pixels=500_000)


def test_minimum_side_is_configurable() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageRejectedError, match="too_small"):
        validate_image(data, min_side=120)


def test_motion_photo_with_a_video_after_the_jpeg_is_complete() -> None:
    # Google and Samsung "motion photos" append an MP4 after the JPEG's end-of-image marker:
    # the image is intact however many bytes follow it.
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 255, (96, 120, 3), dtype=np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 1
    jpeg = encode(rgb, "JPEG", exif=exif.tobytes())
    video = b"\x00\x00\x00\x18ftypmp42" + rng.integers(1, 255, 200_000, dtype=np.uint8).tobytes()
    info = validate_image(jpeg + video.replace(b"\xff\xd9", b"\xff\x00"))
    assert (info.width, info.height, info.format) == (120, 96, "JPEG")
    assert decode_image(jpeg + video).tobytes() == decode_image(jpeg).tobytes()


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_anywhere_before_its_end_marker_is_truncated(progressive: bool) -> None:
    rgb = Image.fromarray(
        np.random.default_rng(4).integers(0, 255, (96, 120, 3), dtype=np.uint8), "RGB"
    )
    # The embedded EXIF thumbnail ends with its own end-of-image marker; it must not count.
    thumbnail = encode(rgb.resize((32, 24)), "JPEG")
    jpeg = encode(rgb, "JPEG", progressive=progressive, exif=b"Exif\x00\x00" + thumbnail)
    for cut in range(len(jpeg) // 4, len(jpeg) - 1, 97):
        with pytest.raises(ImageRejectedError) as excinfo:
            decode_image(jpeg[:cut])
        assert excinfo.value.reason in {"truncated", "corrupt"}


def test_animation_cut_in_a_later_frame_is_truncated_not_a_crash() -> None:
    # Counting the frames of a GIF cut inside its second frame raised IndexError from Pillow,
    # which crashed a whole ingestion run instead of quarantining one file.
    gif = good_images()["animated.gif"]
    cut = gif[: len(gif) * 2 // 3]
    for decode in (validate_image, decode_image):
        with pytest.raises(ImageRejectedError) as excinfo:
            decode(cut)
        assert excinfo.value.reason == "truncated"


def test_damaged_avif_is_corrupt_not_a_crash() -> None:
    # libavif reports damage as RuntimeError, which Pillow lets through Image.open.
    damaged = bytearray(good_images()["rgb.avif"])
    damaged[81] = 0  # inside the item location box: "Missing or empty image item"
    for decode in (validate_image, decode_image):
        with pytest.raises(ImageRejectedError) as excinfo:
            decode(bytes(damaged))
        assert excinfo.value.reason == "corrupt"
        assert "RuntimeError" in excinfo.value.detail


def test_sixteen_bit_grayscale_keeps_its_brightness() -> None:
    # 16-bit samples have a fixed 0..65535 range: a dark image stays dark and a flat one stays
    # its grey (a per-image min/max stretch made the first bright and the second black).
    dark = np.full((100, 100), 2570, dtype=np.uint16)  # 2570 / 257 = 10
    dark[:50] = 5140  # 20
    pixels = np.asarray(decode_image(encode(Image.fromarray(dark), "PNG")))
    assert pixels[0, 0].tolist() == [20, 20, 20]
    assert pixels[-1, -1].tolist() == [10, 10, 10]
    flat = np.full((100, 100), 32896, dtype=np.uint16)  # mid grey: 128
    pixels = np.asarray(decode_image(encode(Image.fromarray(flat), "TIFF")))
    assert np.all(pixels == 128)


@pytest.mark.parametrize("name", ["animated.gif", "rgb.avif", "phone.heic"])
@pytest.mark.parametrize("kept", [0.5, 0.9, 0.99])
def test_containers_cut_short_are_truncated(name: str, kept: float) -> None:
    # An animation cut after its first frame decoded as a complete image, and cut AVIF/HEIC
    # files were "not_an_image" (libavif) or "corrupt" (libheif): the file was truncated.
    data = good_images()[name]
    with pytest.raises(ImageRejectedError) as excinfo:
        validate_image(data[: int(len(data) * kept)])
    assert excinfo.value.reason == "truncated"


def test_a_pixel_budget_above_pillows_own_limit_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's DecompressionBombWarning (between its MAX_IMAGE_PIXELS and twice that) was made
    # an error, so a `max_pixels` raised in config above Pillow's ~89 Mpx was silently capped.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # scaled down: same rule, tiny image
    data = encode(Image.new("RGB", (150, 100), (10, 200, 30)), "PNG")  # 15 000 px
    assert validate_image(data, max_pixels=20_000).width == 150
    assert decode_image(data, max_pixels=20_000).size == (150, 100)
    with pytest.raises(ImageRejectedError, match="decompression_bomb"):
        validate_image(data, max_pixels=12_000)
    huge = encode(Image.new("RGB", (250, 100)), "PNG")  # over twice Pillow's limit
    with pytest.raises(ImageRejectedError, match="decompression_bomb"):
        validate_image(huge, max_pixels=1_000_000)


def test_a_cut_video_is_not_called_a_truncated_image() -> None:
    # The AVIF/HEIF box check only applies to still-image brands; an MP4 is not an image.
    mp4 = (28).to_bytes(4, "big") + b"ftypisom" + bytes(16) + (1000).to_bytes(4, "big") + b"mdat"
    with pytest.raises(ImageRejectedError) as excinfo:
        validate_image(mp4)
    assert excinfo.value.reason == "not_an_image"


def test_wide_grayscale_converts_band_by_band_to_the_same_numbers() -> None:
    # The band-wise conversion must equal the whole-image float formula it replaces.
    from eyecatcher.images import to_8bit_gray

    rng = np.random.default_rng(5)
    sixteen = rng.integers(0, 65536, (1500, 900), dtype=np.uint16)
    got = np.asarray(to_8bit_gray(Image.fromarray(sixteen)))
    np.testing.assert_array_equal(got, np.rint(sixteen / 257.0).astype(np.uint8))
    floats = rng.normal(3.0, 10.0, (1200, 1100)).astype(np.float32)
    low, high = float(floats.min()), float(floats.max())
    expected = ((floats.astype(np.float64) - low) / (high - low) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(to_8bit_gray(Image.fromarray(floats, "F"))), expected)
    flat = Image.new("I", (300, 200), 7)
    assert np.asarray(to_8bit_gray(flat)).max() == 0
