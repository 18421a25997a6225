"""Generate EyeCatcher's embedded demo: harmless synthetic images and synthetic Rekognition answers.

Nothing here depicts a person. Each class is an abstract pattern with its own colour and texture
statistics, so that even a frozen, randomly initialised backbone separates the classes and the
offline demo can reach the registration gate. Metrics on this data say nothing about real
moderation quality.

Run ``python scripts/make_demo_data.py`` (or ``make demo-data``); the output is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "01_raw" / "demo"
SIZE = 128
PER_CLASS = 40
# The MinConfidence of the labelling pipeline's requests (conf/base/parameters_labelling.yml):
# low, so that near misses are part of the answers.
MIN_CONFIDENCE = 20.0

# Rekognition taxonomy v7 chains (top level first) that the synthetic answers use per class.
CLASS_LABELS: dict[str, list[tuple[str, str, int]]] = {
    "safe": [],
    "explicit_nudity": [
        ("Explicit", "", 1),
        ("Explicit Nudity", "Explicit", 2),
        ("Exposed Female Nipple", "Explicit Nudity", 3),
    ],
    "explicit_sexual_activity": [
        ("Explicit", "", 1),
        ("Explicit Sexual Activity", "Explicit", 2),
    ],
    "non_explicit_nudity": [
        ("Non-Explicit Nudity of Intimate parts and Kissing", "", 1),
        ("Non-Explicit Nudity", "Non-Explicit Nudity of Intimate parts and Kissing", 2),
        ("Implied Nudity", "Non-Explicit Nudity", 3),
    ],
    "swimwear_or_underwear": [
        ("Swimwear or Underwear", "", 1),
        ("Female Swimwear or Underwear", "Swimwear or Underwear", 2),
    ],
}

# (base RGB colour, stripe angle in degrees, stripe period in px, number of blobs)
CLASS_STYLE: dict[str, tuple[tuple[int, int, int], float, float, int]] = {
    "safe": ((60, 150, 90), 0.0, 32.0, 4),
    "explicit_nudity": ((200, 60, 60), 45.0, 10.0, 6),
    "explicit_sexual_activity": ((150, 60, 190), 90.0, 18.0, 12),
    "non_explicit_nudity": ((220, 170, 60), 135.0, 14.0, 3),
    "swimwear_or_underwear": ((60, 110, 210), 60.0, 8.0, 2),
}


def _pattern(cls: str, rng: np.random.Generator) -> Image.Image:
    base, angle, period, blobs = CLASS_STYLE[cls]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    # Safe images vary most (any orientation), like the everyday photos they stand for.
    jitter = rng.uniform(0, 180) if cls == "safe" else rng.normal(0, 8)
    theta = np.deg2rad(angle + jitter)
    wave = np.sin(
        2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / (period * rng.uniform(0.8, 1.2))
        + rng.uniform(0, 2 * np.pi)
    )
    colour = np.array(base, dtype=np.float32) + rng.normal(0, 18, size=3)
    pixels = colour[None, None, :] * (0.75 + 0.25 * wave[..., None])
    pixels += rng.normal(0, 10, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(blobs):
        cx, cy = rng.integers(0, SIZE, size=2)
        r = int(rng.integers(6, 18))
        shade = tuple(int(v) for v in np.clip(255 - colour + rng.normal(0, 20, 3), 0, 255))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=shade)
    return image


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=85)
    elif fmt == "PNG-L":
        image.convert("L").save(buffer, "PNG", optimize=True)
    elif fmt == "PNG-RGBA":
        rgba = image.convert("RGBA")
        rgba.putalpha(230)
        rgba.save(buffer, "PNG", optimize=True)
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", quality=85)
    else:
        image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _expected_class(cls: str, index: int) -> str | None:
    """The class the default labelling gives an answer drawn by :func:`_response` (None: excluded).

    Illustrated explicit images are excluded (``taxonomy.illustrated``) and a safe image with a
    near miss is not provably safe (``taxonomy.thresholds``).
    """
    if cls in {"explicit_nudity", "explicit_sexual_activity"} and index % 10 == 3:
        return None
    if cls == "safe" and index % 8 == 4:
        return None
    return cls


def _response(cls: str, rng: np.random.Generator, index: int, seed: int, number: int) -> dict:
    labels = []
    for name, parent, level in CLASS_LABELS[cls]:
        labels.append(
            {
                "Confidence": round(float(rng.uniform(80, 99.9)), 4),
                "Name": name,
                "ParentName": parent,
                "TaxonomyLevel": level,
            }
        )
    # A few answers carry a second, weaker label, so the class-selection rule has work to do.
    if cls == "swimwear_or_underwear" and index % 5 == 0:
        labels += [
            {
                "Confidence": round(float(rng.uniform(50, 70)), 4),
                "Name": "Non-Explicit Nudity of Intimate parts and Kissing",
                "ParentName": "",
                "TaxonomyLevel": 1,
            }
        ]
    if cls == "safe" and index % 8 == 0:
        labels += [
            {
                "Confidence": round(float(rng.uniform(55, 90)), 4),
                "Name": "Alcohol",
                "ParentName": "",
                "TaxonomyLevel": 1,
            }
        ]
    # Near misses, drawn from their own generator so that the images (drawn from `rng`) stay
    # byte-for-byte what they were. A safe image with a weak Swimwear label is not provably
    # safe (excluded); a weak, milder label does not change a non-explicit-nudity image.
    near = np.random.default_rng([seed, number])
    if (cls == "safe" and index % 8 == 4) or (cls == "non_explicit_nudity" and index % 6 == 1):
        labels.append(
            {
                "Confidence": round(float(near.uniform(MIN_CONFIDENCE + 2, 45)), 4),
                "Name": "Swimwear or Underwear",
                "ParentName": "",
                "TaxonomyLevel": 1,
            }
        )
    content_types = []
    if index % 10 == 3:
        content_types.append(
            {"Confidence": round(float(rng.uniform(60, 95)), 4), "Name": "Illustrated"}
        )
    return {
        "ModerationLabels": labels,
        "ModerationModelVersion": "7.0",
        "ContentTypes": content_types,
    }


def generate(out: Path, per_class: int = PER_CLASS, seed: int = 7) -> dict[str, int]:
    """Write the demo images and the recorded responses under ``out``.

    Args:
        out: Destination folder (``images/`` and ``rekognition_responses.jsonl`` go inside).
        per_class: Images per class.
        seed: Random seed; the output is byte-for-byte reproducible for a seed.

    Returns:
        The number of images written per class.
    """
    rng = np.random.default_rng(seed)
    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    formats = ["JPEG"] * 7 + ["PNG", "PNG-L", "WEBP", "PNG-RGBA"]
    records = []
    counts: dict[str, int] = {}
    number = 0
    for cls in CLASS_LABELS:
        for i in range(per_class):
            number += 1
            fmt = formats[int(rng.integers(0, len(formats)))]
            data = _encode(_pattern(cls, rng), fmt)
            suffix = {"JPEG": ".jpg", "WEBP": ".webp"}.get(fmt, ".png")
            # Neutral names: the class is Rekognition's answer, not something the file reveals.
            sub = images_dir / f"upload_batch_{number % 4 + 1}"
            sub.mkdir(exist_ok=True)
            (sub / f"img_{number:04d}{suffix}").write_bytes(data)
            records.append(
                {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "min_confidence": MIN_CONFIDENCE,
                    "synthetic": True,
                    # What the generator drew; lets tests take a per-class slice of the demo.
                    "demo_class": cls,
                    "source": "synthetic-demo",
                    "received_at": "2026-11-22T00:00:00+00:00",
                    # What the default labelling should make of the answer (None: excluded).
                    "demo_expected_class": _expected_class(cls, i),
                    "response": _response(cls, rng, i, seed, number),
                }
            )
            counts[cls] = counts.get(cls, 0) + 1
            # Two exact copies under other names: ingestion collapses them to one image.
            if i in {0, 1} and cls == "safe":
                (sub / f"img_{number:04d}_copy{suffix}").write_bytes(data)
    with (out / "rekognition_responses.jsonl").open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    return counts


FEEDBACK_FILE = "moderator_verdicts.synthetic.jsonl"
FEEDBACK_README = """# Synthetic moderator feedback (demo)

`moderator_verdicts.synthetic.jsonl` is generated by `scripts/make_demo_data.py`: invented
verdicts by invented reviewers on the synthetic demo images. Nothing here is a real decision.
It shows the feedback loop (docs/feedback-loop.md): moderators label the images Rekognition's
answers could not decide, and one image gets two conflicting verdicts, resolved by
`feedback.conflict_rule`.
"""


def feedback_records(out: Path) -> list[dict]:
    """Synthetic moderator verdicts on the demo images under ``out`` (deterministic).

    Every image the default labelling excludes gets a moderator's ``review`` with its true
    class (alternately by sha256 and by path, both are valid references); two labelled images
    get an upheld ``appeal``; one gets a wrong verdict corrected later by a second reviewer.

    Args:
        out: The demo folder (``images/`` and ``rekognition_responses.jsonl``).

    Returns:
        The records, oldest first.
    """
    paths = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.relative_to(ROOT).as_posix()
        if p.is_relative_to(ROOT)
        else p.as_posix()
        for p in sorted((out / "images").rglob("*"))
        if p.is_file()
    }
    answers = [json.loads(line) for line in (out / "rekognition_responses.jsonl").open()]
    start = np.datetime64("2026-11-23T09:00")
    records = []

    def add(answer: dict, verdict: str, kind: str, reviewer: str, note: str, *, by_path: bool):
        when = start + np.timedelta64(len(records) * 37, "m")
        records.append(
            {
                "image": paths[answer["sha256"]] if by_path else answer["sha256"],
                "verdict": verdict,
                "reviewer": reviewer,
                "timestamp": f"{when}Z",
                "kind": kind,
                "note": note,
                "synthetic": True,
            }
        )

    undecided = [a for a in answers if a["demo_expected_class"] is None]
    for i, answer in enumerate(undecided):
        add(
            answer,
            answer["demo_class"],
            "review",
            f"mod-{'ab'[i % 2]}",
            "Rekognition's answer did not decide a class",
            by_path=i % 2 == 1,
        )
    decided = [a for a in answers if a["demo_expected_class"] not in (None, "safe")]
    for answer in decided[:2]:
        add(answer, answer["demo_class"], "appeal", "mod-c", "appeal upheld", by_path=False)
    wrong = decided[5]
    add(wrong, "safe", "review", "mod-a", "first look", by_path=False)
    add(wrong, wrong["demo_class"], "review", "mod-lead", "second opinion overrides", by_path=False)
    return records


def write_feedback(out: Path) -> int:
    """Write the synthetic feedback file and its README under ``out/feedback``.

    Returns:
        The number of records written.
    """
    folder = out / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    records = feedback_records(out)
    with (folder / FEEDBACK_FILE).open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    (folder / "README.md").write_text(FEEDBACK_README)
    return len(records)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    counts = generate(args.out, args.per_class, args.seed)
    print(f"wrote {sum(counts.values())} images to {args.out}: {counts}")
    print(f"wrote {write_feedback(args.out)} synthetic feedback records to {args.out / 'feedback'}")


if __name__ == "__main__":
    main()
