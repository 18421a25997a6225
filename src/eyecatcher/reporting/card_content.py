"""What a model card says, as plain data: facts gathered from the run's reports.

:func:`card_sections` turns the reports of one registered candidate into sections (tables of
``(label, value)`` rows, paragraphs, PNG images); :mod:`eyecatcher.reporting.html_card`
renders them. Every number comes from a report; nothing here computes a metric that the
pipeline did not measure, except intervals and per-class rates at the served threshold, which
are derived from the test predictions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from eyecatcher.reporting.intervals import wilson_interval

Rows = list[tuple[str, str]]


@dataclass
class CardInputs:
    """The reports a model card is made of, for the registered candidate."""

    registration_report: Mapping[str, Any]
    candidate_selection: Mapping[str, Any]
    quantization_decision: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    training_report: Mapping[str, Any]
    test_predictions: pd.DataFrame
    split_manifest: pd.DataFrame
    explanations: Mapping[str, Any]
    explanations_index: Mapping[str, Any]
    image_labels: pd.DataFrame | None = None
    figures: Mapping[str, Figure] = field(default_factory=dict)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _with_interval(successes: int, n: int) -> str:
    interval = wilson_interval(successes, n)
    if interval is None:
        return "n/a (no images)"
    return f"{successes / n:.1%} [{interval[0]:.1%}, {interval[1]:.1%}] ({successes}/{n})"


def png_bytes(image: Any) -> bytes:
    """PNG bytes of a PIL image, a loader of one, or a matplotlib figure."""
    if callable(image) and not isinstance(image, Image.Image | Figure):
        image = image()
    buffer = io.BytesIO()
    if isinstance(image, Figure):
        image.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def review_threshold(report: Mapping[str, Any]) -> float | None:
    """The review threshold registration froze into the version (``thresholds.review``)."""
    value = (report.get("thresholds") or {}).get("review", report.get("operating_threshold"))
    return None if value is None else float(value)


def served_threshold(inputs: CardInputs) -> float | None:
    """The review threshold the served model applies (registration's, else training's)."""
    value = review_threshold(inputs.registration_report)
    if value is None:
        value = inputs.evaluation.get("operating_threshold", {}).get("threshold")
    return None if value is None else float(value)


def _identity(inputs: CardInputs) -> Rows:
    report, training = inputs.registration_report, inputs.training_report
    return [
        ("Registered model", f"{report.get('model_name')} v{report.get('version')}"),
        ("Candidate", str(report.get("candidate"))),
        ("Architecture", str(training.get("architecture"))),
        ("Weights", str(training.get("weights_source"))),
        ("Served precision", str(report.get("precision"))),
        ("Classes (logit order)", ", ".join(training.get("classes", []))),
        ("Safe class", str(training.get("safe_class"))),
        ("Input", _input_text(training.get("data_config", {}))),
        (
            "Training",
            f"{training.get('mode')}, {len(training.get('history', []))} epochs, "
            f"{training.get('n_trainable_parameters')} trainable of "
            f"{training.get('n_parameters')} parameters",
        ),
    ]


def _input_text(data_config: Mapping[str, Any]) -> str:
    size = data_config.get("input_size", ["?", "?", "?"])
    return (
        f"{size[1]}x{size[2]} RGB, {data_config.get('interpolation', '?')} resize, "
        f"mean {data_config.get('mean')}, std {data_config.get('std')}"
    )


def _data_table(split_manifest: pd.DataFrame) -> pd.DataFrame:
    table = pd.crosstab(split_manifest["class"], split_manifest["split"])
    table = table.reindex(columns=[c for c in ("train", "validation", "test") if c in table])
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    return table


def _label_sources(inputs: CardInputs) -> Rows:
    labels = inputs.image_labels
    if labels is None or "label_source" not in labels.columns:
        return [("Label sources", "not recorded")]
    used = labels[labels["sha256"].isin(inputs.split_manifest["sha256"])]
    counts = used["label_source"].fillna("unknown").value_counts().sort_index()
    return [(f"Labels from {source}", f"{count} images") for source, count in counts.items()]


def _metrics(inputs: CardInputs) -> Rows:
    test = inputs.evaluation["test"]
    predictions = inputs.test_predictions
    n = len(predictions)
    rows = [
        (
            "Accuracy of the fp32 model (test, 95% Wilson interval)",
            _with_interval(int(predictions["correct"].sum()), n),
        ),
        ("Macro-F1 (test)", _num(test.get("macro_f1"))),
        ("Safe vs unsafe ROC-AUC (test)", _num(test.get("roc_auc"))),
        ("Safe vs unsafe PR-AUC (test)", _num(test.get("pr_auc"))),
    ]
    served = _served_calibration(inputs).get("test")
    if served:
        precision = inputs.registration_report.get("precision")
        for key, label in (("accuracy", "Accuracy"), ("recall", "Recall"), ("fpr", "FPR")):
            interval = served.get(f"{key}_ci")
            text = _pct(served.get(key))
            if interval:
                text += f" [{interval[0]:.1%}, {interval[1]:.1%}]"
            rows.append((f"{label} of the served {precision} model (test)", text))
    return rows


def _served_calibration(inputs: CardInputs) -> Mapping[str, Any]:
    if inputs.registration_report.get("calibration"):
        return inputs.registration_report["calibration"]
    candidate = inputs.registration_report.get("candidate")
    decision = inputs.quantization_decision.get("candidates", {}).get(candidate, {})
    return decision.get("calibration") or {}


def operating_point(inputs: CardInputs) -> tuple[list[str], pd.DataFrame]:
    """The operating point in words, and per-class rates at the served threshold on test."""
    threshold = served_threshold(inputs)
    thresholds = inputs.registration_report.get("thresholds", {})
    calibration = inputs.evaluation.get("operating_threshold", {})
    safe = inputs.training_report.get("safe_class", "safe")
    words = []
    if threshold is None or not math.isfinite(threshold):
        words.append("No finite operating threshold was calibrated: every image is flagged.")
    else:
        words.append(
            f"An image is sent to review when its unsafe score, 1 - p({safe}), is above "
            f"{threshold:.3f}. The threshold was calibrated on the validation split for a "
            f"false-positive rate of at most {_pct(calibration.get('target_fpr'))}."
        )
    if thresholds.get("block") is not None:
        words.append(
            "It is blocked outright when the probability of a blocking class is above "
            f"{_block_text(thresholds['block'])}."
        )
    if calibration.get("warning"):
        words.append(f"Caution: {calibration['warning']}.")
    predictions = inputs.test_predictions
    rows = []
    for cls, group in predictions.groupby("class", sort=True):
        flagged = group["unsafe_score"] > (threshold if threshold is not None else -math.inf)
        is_safe = cls == safe
        hits = int((~flagged).sum() if is_safe else flagged.sum())
        rows.append(
            {
                "class": cls,
                "test images": len(group),
                "what counts as right": "passed (not flagged)" if is_safe else "flagged",
                "rate at the operating point": _with_interval(hits, len(group)),
                "top-1 recall": _pct(float(group["correct"].mean())),
            }
        )
    if inputs.registration_report.get("precision") not in (None, "fp32"):
        words.append(
            "Per-class rates below use the fp32 model's test scores; the served "
            f"{inputs.registration_report['precision']} model's overall rates are in the "
            "metrics table."
        )
    return words, pd.DataFrame(rows)


def _block_text(value: Any) -> str:
    if isinstance(value, Mapping):
        parts = [
            f"{name} {_num(float(v.get('threshold') if isinstance(v, Mapping) else v))}"
            for name, v in value.items()
        ]
        return "its own threshold (" + ", ".join(parts) + ")"
    return _num(float(value))


def _quantization(inputs: CardInputs) -> Rows:
    candidate = inputs.registration_report.get("candidate")
    decision = inputs.quantization_decision.get("candidates", {}).get(candidate)
    if not decision:
        return [("Quantization", "no decision recorded for this candidate")]
    rows = [
        ("Chosen precision", str(decision.get("precision"))),
        ("Why", str(decision.get("reason"))),
    ]
    for variant in ("fp32", "int8"):
        record = decision.get(variant) or {}
        if record:
            method = f" ({record['method']})" if record.get("method") else ""
            rows.append(
                (
                    f"{variant}{method}",
                    f"test accuracy {_num(record.get('accuracy'))}, "
                    f"validation accuracy {_num(record.get('validation_accuracy'))}, "
                    f"{_num((record.get('size_bytes') or math.nan) / 1e6, 1)} MB, "
                    f"p50 {_num(record.get('latency_ms_p50'), 2)} ms",
                )
            )
    if decision.get("failure"):
        rows.append(("Failure", str(decision["failure"])))
    return rows


def _gate_and_lineage(inputs: CardInputs) -> Rows:
    report = inputs.registration_report
    gate = report.get("gate", {})
    smoke = report.get("smoke_test") or {}
    selection = inputs.candidate_selection
    return [
        ("Outcome", str(report.get("outcome"))),
        ("Gate", str(gate.get("summary"))),
        ("Previous champion", str(report.get("previous_champion") or "none")),
        ("Aliases", ", ".join(f"{k}: v{v}" for k, v in report.get("aliases", {}).items())),
        (
            "Staging inference test",
            f"{'passed' if smoke.get('passed') else 'failed'} on {smoke.get('images')} images"
            if smoke
            else "not run",
        ),
        ("Selected because", str(selection.get("reason"))),
        ("MLflow run", str(report.get("run_id"))),
        *[
            (f"Fingerprint: {name}", str(value))
            for name, value in (report.get("fingerprints") or {}).items()
        ],
        *(
            [("Test split sha256", str(report["test_split_hash"]))]
            if "test_split_hash" in report
            else []
        ),
        (
            "Backbone fingerprint",
            str(inputs.training_report.get("cache", {}).get("backbone_fingerprint")),
        ),
    ]


def gallery(inputs: CardInputs) -> list[tuple[bytes, str]]:
    """The heatmap overlays with a caption each (why chosen, truth, prediction)."""
    items = []
    for record in inputs.explanations_index.get("examples", []):
        stem = str(record["file"]).removesuffix(".png")
        if stem not in inputs.explanations:
            continue
        caption = (
            f"{record['reason'].replace('_', ' ')} #{record['rank']}: true {record['class']}, "
            f"predicted {record['predicted']} ({record['confidence']:.2f}), "
            f"unsafe score {record['unsafe_score']:.2f}"
        )
        items.append((png_bytes(inputs.explanations[stem]), caption))
    return items


def limitations(inputs: CardInputs) -> list[str]:
    """Known limitations, from the facts of this run."""
    training = inputs.training_report
    notes = []
    if training.get("random_weights"):
        notes.append(
            "DEMO MODEL: the backbone is randomly initialised (weights: random). Its metrics "
            "describe the synthetic demo, not a pretrained model; do not moderate real users "
            "with it."
        )
    n_test = len(inputs.test_predictions)
    if n_test < 1000:
        notes.append(
            f"The test split has {n_test} images: the intervals above are wide, and rates "
            "below about 1/n cannot be measured."
        )
    warning = inputs.evaluation.get("operating_threshold", {}).get("warning")
    if warning:
        notes.append(f"Operating threshold: {warning}.")
    notes.extend(
        f"Registration: {w}" for w in inputs.registration_report.get("gate", {}).get("warnings", [])
    )
    notes.append(
        "Classes are what the labels say: images outside these classes (other kinds of "
        "unsafe content) are scored as whichever class they resemble."
    )
    notes.append(
        "Heatmaps show where the evidence for the predicted class lies in the image the model "
        f"saw ({inputs.explanations_index.get('method')}); they do not show why, and a model "
        "can be right for the wrong reason."
    )
    return notes


def card_sections(inputs: CardInputs) -> dict[str, Any]:
    """Everything the card shows, section by section.

    Returns:
        ``title``, ``banner`` (demo warning or ``None``), ``identity``, ``data`` (class x
        split counts), ``label_sources``, ``metrics``, ``operating_words``,
        ``per_class``, ``figures`` (name -> PNG bytes), ``quantization``, ``gate``,
        ``gallery`` and ``limitations``.
    """
    report = inputs.registration_report
    words, per_class = operating_point(inputs)
    banner = None
    if inputs.training_report.get("random_weights"):
        banner = (
            "Demo model: random backbone weights. These numbers describe the synthetic demo, "
            "not a model fit to moderate anyone."
        )
    return {
        "title": f"Model card: {report.get('model_name')} v{report.get('version')}",
        "banner": banner,
        "identity": _identity(inputs),
        "data": _data_table(inputs.split_manifest),
        "label_sources": _label_sources(inputs),
        "metrics": _metrics(inputs),
        "operating_words": words,
        "per_class": per_class,
        "figures": {name: png_bytes(figure) for name, figure in inputs.figures.items()},
        "quantization": _quantization(inputs),
        "gate": _gate_and_lineage(inputs),
        "gallery": gallery(inputs),
        "limitations": limitations(inputs),
    }
