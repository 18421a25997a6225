"""Talking to Rekognition: Stubber for every response and error kind, the real retry path
against a local endpoint, credentials, and what is sent for each kind of image."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from PIL import Image

from eyecatcher.images import sha256_bytes
from eyecatcher.rekognition.batch import (
    ImageTask,
    LabellingAbortedError,
    RequestSettings,
    send_images,
)
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.client import (
    IMAGE_ERROR_CODES,
    TRANSIENT_ERROR_CODES,
    OfflineModeError,
    RekognitionCredentialsError,
    RekognitionEndpoint,
)
from eyecatcher.rekognition.local_endpoint import LocalRekognition, ScriptedBehaviour
from eyecatcher.rekognition.payload import (
    PayloadError,
    PayloadLimits,
    build_payload,
    conversion_needed,
    fit_bytes,
)
from tests.pipelines.labelling.conftest import index_rows

FAKE_KEYS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"}

V7 = {
    "ModerationLabels": [
        {"Confidence": 93.1, "Name": "Explicit", "ParentName": "", "TaxonomyLevel": 1},
        {
            "Confidence": 92.0,
            "Name": "Explicit Nudity",
            "ParentName": "Explicit",
            "TaxonomyLevel": 2,
        },
        {
            "Confidence": 90.2,
            "Name": "Exposed Female Nipple",
            "ParentName": "Explicit Nudity",
            "TaxonomyLevel": 3,
        },
    ],
    "ModerationModelVersion": "7.0",
    "ContentTypes": [],
}
V6 = {
    "ModerationLabels": [
        {"Confidence": 88.0, "Name": "Suggestive", "ParentName": ""},
        {"Confidence": 87.5, "Name": "Female Swimwear Or Underwear", "ParentName": "Suggestive"},
    ],
    "ModerationModelVersion": "6.0",
}
EMPTY = {"ModerationLabels": [], "ModerationModelVersion": "7.0", "ContentTypes": []}
CONTENT_TYPES = {
    "ModerationLabels": [],
    "ModerationModelVersion": "7.0",
    "ContentTypes": [{"Confidence": 91.0, "Name": "Animated"}],
}


def _endpoint(url: str | None = None, attempts: int = 3) -> RekognitionEndpoint:
    return RekognitionEndpoint(
        mode="live",
        endpoint_url=url,
        credentials=FAKE_KEYS,
        max_attempts=attempts,
        connect_timeout=2,
        read_timeout=5,
    )


def _task(path: Path) -> ImageTask:
    data = path.read_bytes()
    fmt = Image.open(path).format
    return ImageTask(sha256_bytes(data), str(path), fmt, len(data))


@pytest.mark.parametrize(
    "response", [V7, V6, EMPTY, CONTENT_TYPES], ids=["v7", "v6", "empty", "content_types"]
)
def test_each_response_kind_is_cached_verbatim(
    response: dict, small_images: list[Path], tmp_path: Path
) -> None:
    client = _endpoint().client()
    cache = ResponseCache(tmp_path / "cache.jsonl")
    task = _task(small_images[0])
    with Stubber(client) as stub:
        stub.add_response(
            "detect_moderation_labels",
            response,
            {"Image": {"Bytes": small_images[0].read_bytes()}, "MinConfidence": 50.0},
        )
        report = send_images(
            [task], client=client, cache=cache, settings=RequestSettings(), workers=1
        )
        stub.assert_no_pending_responses()
    (outcome,) = report.outcomes
    assert outcome.status == "answered" and outcome.payload_kind == "bytes"
    record = json.loads((tmp_path / "cache.jsonl").read_text())
    assert record["response"] == response
    assert (record["sha256"], record["min_confidence"]) == (task.sha256, 50.0)
    assert report.cost_usd == pytest.approx(0.001)


@pytest.mark.parametrize("code", sorted(IMAGE_ERROR_CODES))
def test_image_errors_are_recorded_with_their_code_and_cached_as_errors(
    code: str, small_images: list[Path], tmp_path: Path
) -> None:
    client = _endpoint().client()
    cache = ResponseCache(tmp_path / "cache.jsonl")
    with Stubber(client) as stub:
        stub.add_client_error(
            "detect_moderation_labels",
            service_error_code=code,
            service_message="nope",
            http_status_code=400,
        )
        stub.add_response("detect_moderation_labels", EMPTY, {"Image": ANY, "MinConfidence": 50.0})
        report = send_images(
            [_task(p) for p in small_images[:2]],
            client=client,
            cache=cache,
            settings=RequestSettings(),
            workers=1,
        )
    statuses = {o.task.uri: (o.status, o.error_code) for o in report.outcomes}
    assert statuses[str(small_images[0])] == ("image_error", code)
    assert statuses[str(small_images[1])] == ("answered", None)
    records = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert records[0]["error"]["code"] == code
    assert report.cost_usd == pytest.approx(0.001)  # errors are not charged


@pytest.mark.parametrize("code", sorted(TRANSIENT_ERROR_CODES))
def test_transient_errors_left_after_retries_are_not_cached(
    code: str, small_images: list[Path], tmp_path: Path
) -> None:
    # Stubber answers before botocore's retry layer, so this is the "retries exhausted" case.
    client = _endpoint().client()
    cache = ResponseCache(tmp_path / "cache.jsonl")
    with Stubber(client) as stub:
        stub.add_client_error(
            "detect_moderation_labels",
            service_error_code=code,
            http_status_code=500 if code == "InternalServerError" else 400,
        )
        report = send_images(
            [_task(small_images[0])],
            client=client,
            cache=cache,
            settings=RequestSettings(),
            workers=1,
        )
    assert [(o.status, o.error_code) for o in report.outcomes] == [("failed", code)]
    assert not (tmp_path / "cache.jsonl").exists()


def test_rejected_credentials_stop_the_run(small_images: list[Path], tmp_path: Path) -> None:
    client = _endpoint().client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "detect_moderation_labels",
            service_error_code="UnrecognizedClientException",
            http_status_code=400,
        )
        with pytest.raises(RekognitionCredentialsError, match="UnrecognizedClientException"):
            send_images(
                [_task(p) for p in small_images[:3]],
                client=client,
                cache=ResponseCache(tmp_path / "c.jsonl"),
                settings=RequestSettings(),
                workers=1,
            )


def test_missing_credentials_are_one_clear_error_before_anything_is_sent() -> None:
    # conftest's autouse fixture removed every AWS variable and config file.
    endpoint = RekognitionEndpoint(mode="live", credentials={})
    with pytest.raises(RekognitionCredentialsError, match="No AWS credentials"):
        endpoint.check_credentials()
    assert _endpoint().check_credentials() == "explicit"
    with pytest.raises(RekognitionCredentialsError, match="profile"):
        RekognitionEndpoint(mode="live", credentials={"profile_name": "nope"}).check_credentials()


def test_offline_endpoint_refuses_to_build_a_client() -> None:
    with pytest.raises(OfflineModeError):
        RekognitionEndpoint(mode="offline").client()


def test_client_uses_standard_retries_with_bounded_attempts() -> None:
    client = _endpoint(attempts=4).client(max_pool_connections=12)
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert client.meta.config.max_pool_connections == 12


def test_throttling_goes_through_botocores_real_retry_path(
    small_images: list[Path], tmp_path: Path
) -> None:
    behaviour = ScriptedBehaviour(
        answer=lambda _: V7,
        fail_first=[
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "InternalServerError",
        ],
    )
    with LocalRekognition(behaviour) as server:
        client = _endpoint(server.url, attempts=5).client()
        report = send_images(
            [_task(small_images[0])],
            client=client,
            cache=ResponseCache(tmp_path / "c.jsonl"),
            settings=RequestSettings(),
            workers=1,
        )
    assert [o.status for o in report.outcomes] == ["answered"]
    # Three throttled/failed attempts, then the answer: botocore retried on its own.
    assert [status for _, status in server.requests] == [400, 400, 500, 200]
    assert report.outcomes[0].response["ModerationLabels"] == V7["ModerationLabels"]


def test_retries_are_bounded_and_the_image_stays_uncached(
    small_images: list[Path], tmp_path: Path
) -> None:
    behaviour = ScriptedBehaviour(fail_first=["ThrottlingException"] * 10)
    with LocalRekognition(behaviour) as server:
        client = _endpoint(server.url, attempts=2).client()
        report = send_images(
            [_task(small_images[0])],
            client=client,
            cache=ResponseCache(tmp_path / "c.jsonl"),
            settings=RequestSettings(),
            workers=1,
        )
    assert len(server.requests) == 2
    assert [(o.status, o.error_code) for o in report.outcomes] == [
        ("failed", "ThrottlingException")
    ]
    assert not (tmp_path / "c.jsonl").exists()


def test_consecutive_failures_abort_and_keep_what_was_answered(
    small_images: list[Path], tmp_path: Path
) -> None:
    images = small_images[:10]
    bad = {sha256_bytes(p.read_bytes()): "AccessDeniedException" for p in images[1:]}
    behaviour = ScriptedBehaviour(errors_by_image=bad)
    cache_path = tmp_path / "c.jsonl"
    with LocalRekognition(behaviour) as server:
        client = _endpoint(server.url).client()
        with pytest.raises(LabellingAbortedError, match="3 failures in a row"):
            send_images(
                [_task(p) for p in images],
                client=client,
                cache=ResponseCache(cache_path),
                settings=RequestSettings(),
                workers=1,
                max_consecutive_failures=3,
            )
        sent = len(server.requests)
    # Stopped early; every request that reached the server (in flight included) is cached.
    assert sent < len(images)
    records = [json.loads(line) for line in cache_path.read_text().splitlines()]
    assert "response" in records[0] and len(records) == sent


def _jpeg(size: tuple[int, int], quality: int = 95) -> bytes:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_payload_kinds(tmp_path: Path, small_images: list[Path]) -> None:
    limits = PayloadLimits()
    unverified = PayloadLimits(verify_s3_object=False)
    s3 = build_payload("s3://bucket/a/b.jpg", "JPEG", 10 * 2**20, unverified)
    assert (s3.kind, s3.image) == (
        "s3object",
        {"S3Object": {"Bucket": "bucket", "Name": "a/b.jpg"}},
    )
    png = build_payload(str(small_images[1]), "PNG", 100, limits)
    assert (png.kind, png.prepared) == ("bytes", "as_is")
    assert png.image["Bytes"] == small_images[1].read_bytes()
    webp = build_payload(str(small_images[12]), "WEBP", 100, limits)
    assert webp.prepared == "converted"
    assert Image.open(io.BytesIO(webp.image["Bytes"])).format == "JPEG"


def test_oversized_images_are_downscaled_not_below_min_side(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg((900, 700)))
    size = path.stat().st_size
    limits = PayloadLimits(max_bytes=size // 3)
    payload = build_payload(str(path), "JPEG", size, limits)
    assert payload.prepared == "downscaled"
    assert len(payload.image["Bytes"]) <= limits.max_bytes
    assert min(Image.open(io.BytesIO(payload.image["Bytes"])).size) >= 80
    # An S3 object above 15 MB cannot go by reference; it is read and shrunk like any other.
    with pytest.raises(PayloadError, match="too_large"):
        build_payload(str(path), "JPEG", size, PayloadLimits(max_bytes=2000))


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (120, 100), **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 200 if mode.startswith("I") else None).save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_encoded("RGB", "JPEG"), None),
        (_encoded("L", "JPEG"), None),
        (_encoded("RGB", "PNG"), None),
        (_encoded("RGBA", "PNG"), None),
        (_encoded("CMYK", "JPEG"), "JPEG CMYK"),
        (_encoded("RGB", "JPEG", progressive=True), "progressive JPEG"),
        (_encoded("I;16", "PNG"), "16-bit PNG"),
        (_encoded("RGB", "WEBP"), "WEBP"),
        (_encoded("RGB", "BMP"), "BMP"),
        (_encoded("RGB", "TIFF"), "TIFF"),
    ],
)
def test_only_baseline_jpeg_and_8bit_png_go_as_they_are(
    tmp_path: Path, data: bytes, reason: str | None
) -> None:
    assert conversion_needed(data) == reason
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    payload = build_payload(
        str(path), Image.open(io.BytesIO(data)).format, len(data), PayloadLimits()
    )
    if reason is None:
        assert (payload.prepared, payload.image["Bytes"]) == ("as_is", data)
        return
    assert (payload.prepared, payload.converted_from) == ("converted", reason)
    sent = Image.open(io.BytesIO(payload.image["Bytes"]))
    assert (sent.format, sent.mode, sent.info.get("progressive")) == ("JPEG", "RGB", None)


def test_quality_is_stepped_down_before_the_image_is_downscaled(tmp_path: Path) -> None:
    data = _jpeg((400, 300), quality=95)
    at_90, at_60 = (len(_encode_at(data, q)) for q in (90, 60))
    limits = PayloadLimits(max_bytes=(at_90 + at_60) // 2)
    encoded, prepared = fit_bytes(data, limits)
    assert prepared == "converted" and len(encoded) <= limits.max_bytes
    assert Image.open(io.BytesIO(encoded)).size == (400, 300)  # full size, lower quality


def _encode_at(data: bytes, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_an_image_wider_than_jpeg_allows_is_downscaled_to_fit(tmp_path: Path) -> None:
    wide = _encoded("RGB", "PNG", size=(70_000, 90))
    encoded, prepared = fit_bytes(wide, PayloadLimits())
    assert prepared == "downscaled"
    assert max(Image.open(io.BytesIO(encoded)).size) <= 65_500


def test_any_exception_while_building_a_request_is_that_images_error(
    tmp_path: Path, small_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No credentials anywhere: s3fs raises botocore's NoCredentialsError (not an OSError) while
    # signing, before any connection; the endpoint is local in case a credential is found.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    by_reference = ImageTask("d" * 64, "s3://uploads/a.jpg", "JPEG", 100)
    to_read = ImageTask("e" * 64, "s3://uploads/b.webp", "WEBP", 100)
    fine = index_rows([small_images[0]]).iloc[0]
    task = ImageTask(fine.sha256, fine.uri, "JPEG", int(fine.bytes))
    client = _endpoint().client()
    settings = RequestSettings(
        storage_options={"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    )
    with Stubber(client) as stub:
        stub.add_response("detect_moderation_labels", {"ModerationLabels": []})
        report = send_images(
            [by_reference, to_read, task],
            client=client,
            cache=ResponseCache(tmp_path / "c.jsonl"),
            settings=settings,
            workers=1,
        )
    outcomes = {o.task.sha256: o for o in report.outcomes}
    assert outcomes["d" * 64].status == "prepare_error"
    assert "NoCredentialsError" in str(outcomes["d" * 64].error_message)
    assert outcomes["e" * 64].status == "prepare_error"
    assert outcomes["e" * 64].error_code in {"prepare:error", "prepare:unreadable"}
    assert outcomes[fine.sha256].status == "answered"


def test_unreadable_image_is_a_prepare_error_and_nothing_is_sent(tmp_path: Path) -> None:
    missing = ImageTask("f" * 64, str(tmp_path / "gone.png"), "PNG", 10)
    client = _endpoint().client()
    with Stubber(client):  # no stubbed response: any call would fail the test
        report = send_images(
            [missing],
            client=client,
            cache=ResponseCache(tmp_path / "c.jsonl"),
            settings=RequestSettings(),
            workers=1,
        )
    assert [(o.status, o.error_code) for o in report.outcomes] == [
        ("prepare_error", "prepare:unreadable")
    ]


def test_credentials_never_appear_in_descriptions() -> None:
    from eyecatcher.datasets.rekognition_endpoint_dataset import RekognitionEndpointDataset

    dataset = RekognitionEndpointDataset(
        mode="live", credentials={**FAKE_KEYS, "region_name": "eu-west-1"}
    )
    endpoint = dataset.load()
    assert endpoint.region_name == "eu-west-1"
    for text in (repr(dataset), str(dataset._describe()), repr(endpoint)):
        assert "secret" not in text and "AKIDEXAMPLE" not in text
