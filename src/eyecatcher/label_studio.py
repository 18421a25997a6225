"""Label Studio's JSON formats: review tasks out, completed exports back in as feedback records.

Out (the review queue): one task per image in Label Studio's import format, ``{"data": {...},
"predictions": [...]}``. ``data`` carries the image URI (``image``), its ``sha256``, the path
it was scored under, the model's answer (class, decision, unsafe score, probabilities, model
version) and the heatmap URI when there is one; the model's class is a pre-annotation
(``predictions[0].result``: one ``choices`` result), so a moderator confirms or changes it.
:func:`labelling_config` is the project's labelling interface: one single-choice question over
the taxonomy's classes, named :data:`FROM_NAME`, about the image :data:`TO_NAME`.

Back (feedback): a project exported as **JSON** (Label Studio's "JSON" export: a list of tasks,
each with its ``annotations``) is read like any other feedback file. Every submitted annotation
becomes one record: ``image`` = the task's ``sha256`` (else its ``path``, else its ``image``),
``verdict`` = the chosen class, ``reviewer`` = ``label-studio:<user id>``, ``timestamp`` = the
annotation's ``updated_at`` (else ``created_at``), ``kind`` = ``review``. Skipped (cancelled)
annotations and tasks nobody annotated are not decisions: they are counted in the log, not
returned. Anything else that is not a usable verdict becomes a ``malformed`` record, so feedback
validation lists it with the file and the task's position.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

logger = logging.getLogger(__name__)

#: Name of the choices control in the labelling config (``from_name`` of every result).
FROM_NAME = "verdict"
#: Name of the image object the choices are about (``to_name`` of every result).
TO_NAME = "image"
#: Name of the optional second image object showing the model's heatmap.
HEATMAP_NAME = "heatmap"
#: Feedback kind of a verdict given in Label Studio: a moderator's own review.
KIND = "review"


def labelling_config(classes: Sequence[str], *, heatmap: bool) -> str:
    """The Label Studio labelling interface for the review queue's tasks.

    Args:
        classes: The taxonomy's classes; each is one choice, its value exactly the class name
            (so an exported choice is the class, with no mapping table to drift).
        heatmap: Whether tasks carry a ``heatmap`` URI to show next to the image.

    Returns:
        The ``<View>`` XML to paste into the project's Settings → Labeling Interface.
    """
    if not classes:
        raise ValueError("the labelling config needs at least one class")
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    heat = (
        f'  <Header value="Model heatmap (where it looked)"/>\n'
        f'  <Image name="{HEATMAP_NAME}" value="${HEATMAP_NAME}"/>\n'
        if heatmap
        else ""
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        '  <Header value="Model: $predicted_class ($decision, unsafe score $unsafe_score, '
        'version $model_version, queued for $queue)"/>\n'
        f"{heat}"
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" required="true" '
        'showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def review_task(
    *,
    image_uri: str,
    sha256: str | None,
    path: str,
    queue: str,
    predicted_class: str,
    decision: str,
    unsafe_score: float,
    probabilities: Mapping[str, float],
    model_name: str,
    model_version: str,
    scored_at: str | None,
    heatmap_uri: str | None = None,
) -> dict[str, Any]:
    """One Label Studio task (import format) with the model's answer as a pre-annotation.

    Args:
        image_uri: What Label Studio loads (a URL, an ``s3://`` URI its cloud storage resolves,
            or ``/data/local-files/?d=…``).
        sha256: The image's content hash (how the export is matched back), if indexed.
        path: The path the image was scored under.
        queue: Why it is queued: ``review`` (the model said so) or ``audit`` (a sample).
        predicted_class: The model's class (the pre-annotation).
        decision: ``allow``, ``review`` or ``block``.
        unsafe_score: The model's unsafe score.
        probabilities: Class → probability.
        model_name: Registered model name.
        model_version: Its version.
        scored_at: When batch scoring scored it (ISO 8601), if known.
        heatmap_uri: The heatmap image's URI, if the verdict table has one.

    Returns:
        ``{"data": {...}, "predictions": [{"model_version", "score", "result"}]}``.
    """
    data: dict[str, Any] = {
        "image": image_uri,
        "sha256": sha256,
        "path": path,
        "queue": queue,
        "predicted_class": predicted_class,
        "decision": decision,
        "unsafe_score": round(float(unsafe_score), 6),
        "probabilities": {str(k): round(float(v), 6) for k, v in probabilities.items()},
        "model_name": model_name,
        "model_version": model_version,
        "scored_at": scored_at,
    }
    if heatmap_uri is not None:
        data[HEATMAP_NAME] = heatmap_uri
    result = {
        "id": f"model-{(sha256 or path)[-10:]}",
        "type": "choices",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "value": {"choices": [predicted_class]},
    }
    return {
        "data": data,
        "predictions": [
            {
                "model_version": f"{model_name}/{model_version}",
                # Label Studio sorts tasks by this: the model's confidence in its own class.
                "score": round(float(probabilities.get(predicted_class, 0.0)), 6),
                "result": [result],
            }
        ],
    }


def _malformed(file: str, position: int | None, detail: str) -> dict[str, Any]:
    return {"_file": file, "_line": position, "_problem": detail, "_status": "malformed"}


def _reviewer(completed_by: Any) -> str | None:
    """``label-studio:<id>`` from an export's ``completed_by`` (an id, or a user object)."""
    if isinstance(completed_by, Mapping):
        completed_by = completed_by.get("id", completed_by.get("email"))
    if completed_by is None or isinstance(completed_by, bool) or str(completed_by).strip() == "":
        return None
    return f"label-studio:{completed_by}"


def _choice(result: Any) -> tuple[str | None, str | None]:
    """``(chosen class, problem)`` from one annotation's ``result`` list."""
    if not isinstance(result, list):
        return None, "annotation 'result' is not a list"
    answers = [
        r
        for r in result
        if isinstance(r, Mapping) and r.get("type") == "choices" and r.get("from_name") == FROM_NAME
    ]
    if len(answers) != 1:
        return None, (
            f"{len(answers)} '{FROM_NAME}' choices results (expected one; was the project "
            "set up with the review queue's labelling config?)"
        )
    choices = (answers[0].get("value") or {}).get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return None, f"'{FROM_NAME}' must hold exactly one choice, got {choices!r}"
    return str(choices[0]), None


def _task_records(file: str, position: int, task: Any) -> tuple[list[dict[str, Any]], int, int]:
    """Records of one exported task, and its counts of skipped and of unannotated tasks."""
    if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
        return [_malformed(file, position, "a task without a 'data' object")], 0, 0
    if not isinstance(task.get("annotations", []), list):
        return [_malformed(file, position, "task 'annotations' is not a list")], 0, 0
    data = task["data"]
    image = data.get("sha256") or data.get("path") or data.get("image")
    annotations = task.get("annotations") or []
    records: list[dict[str, Any]] = []
    cancelled = 0
    for annotation in annotations:
        if not isinstance(annotation, Mapping):
            records.append(_malformed(file, position, "an annotation that is not an object"))
            continue
        if annotation.get("was_cancelled"):
            cancelled += 1
            continue
        verdict, problem = _choice(annotation.get("result"))
        if problem is not None:
            records.append(_malformed(file, position, f"task {task.get('id')}: {problem}"))
            continue
        records.append(
            {
                "image": image,
                "verdict": verdict,
                "reviewer": _reviewer(annotation.get("completed_by")),
                "timestamp": annotation.get("updated_at") or annotation.get("created_at"),
                "kind": KIND,
                "note": f"label studio task {task.get('id')}, annotation {annotation.get('id')}"
                + (f", queued for {data['queue']}" if data.get("queue") else ""),
                "_file": file,
                "_line": position,
            }
        )
    return records, cancelled, int(not annotations)


def export_records(file: str, data: bytes) -> list[dict[str, Any]]:
    """Feedback records from one Label Studio JSON export (see the module docstring).

    Args:
        file: The file's name, for the report.
        data: The file's bytes.

    Returns:
        Raw records as :func:`~.files.parse_feedback_files` returns them: the fields of a
        feedback record plus ``_file`` and ``_line`` (the task's 1-based position in the
        export), or ``_problem`` for what could not be read.
    """
    try:
        tasks = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [_malformed(file, None, f"not JSON ({exc})")]
    except (ValueError, RecursionError) as exc:
        # Valid syntax Python refuses: an integer over 4,300 digits, or nesting too deep.
        return [_malformed(file, None, f"not a readable export ({type(exc).__name__}: {exc})")]
    if not isinstance(tasks, list):
        return [
            _malformed(
                file,
                None,
                f"a JSON {type(tasks).__name__}, not a Label Studio JSON export (a list of tasks)",
            )
        ]
    records: list[dict[str, Any]] = []
    cancelled = unannotated = 0
    for position, task in enumerate(tasks, start=1):
        rows, skipped, empty = _task_records(file, position, task)
        records.extend(rows)
        cancelled += skipped
        unannotated += empty
    if cancelled or unannotated:
        logger.info(
            "Label Studio export %s: %d task(s), %d skipped annotation(s) and %d task(s) "
            "without an annotation (not decisions: no feedback record)",
            file,
            len(tasks),
            cancelled,
            unannotated,
        )
    return records
