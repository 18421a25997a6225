"""One message for every unknown parameter key, with the closest known key."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from eyecatcher.candidates import candidate_names
from eyecatcher.parameters import Settings, closest, refuse_unknown, unknown_keys_error
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.pipelines.feedback.settings import FeedbackSettings
from eyecatcher.pipelines.ingestion.settings import IngestionSettings
from eyecatcher.pipelines.labelling.settings import LabellingSettings
from eyecatcher.pipelines.model_card.settings import ModelCardSettings
from eyecatcher.pipelines.quantization.settings import QuantizationSettings
from eyecatcher.pipelines.retrain_check.settings import RetrainSettings
from eyecatcher.pipelines.review_queue.settings import ReviewQueueSettings
from eyecatcher.pipelines.serving.settings import ServingSettings
from eyecatcher.pipelines.splitting.settings import SplittingSettings
from eyecatcher.pipelines.training.settings import TrainingSettings, candidate_settings
from eyecatcher.settings import CONFIG_LOADER_ARGS
from tests.conftest import REPO


def test_the_closest_key_is_named_and_nothing_far_is_guessed() -> None:
    assert closest("engin", ["engine", "workers"]) == "engine"
    assert closest("by_architecture.vit.methds", ["methods"]) == "methods"
    assert closest("zzzz", ["engine"]) is None


def test_every_unknown_key_is_listed_once_with_the_known_ones() -> None:
    error = unknown_keys_error("training.features", {"engin", "zzzz"}, ["engine", "views"])
    text = str(error)
    assert "Unknown training.features parameter(s)" in text
    assert "'engin' (did you mean 'engine'?), 'zzzz'; known" in text  # no guess for zzzz
    assert text.endswith("known: ['engine', 'views'].")


def test_known_keys_pass_and_unknown_ones_are_refused() -> None:
    refuse_unknown("batch_scoring", {"engine": "ray"}, {"engine", "ray"})
    with pytest.raises(ValueError, match=r"'engnie' \(did you mean 'engine'\?\)"):
        refuse_unknown("batch_scoring", {"engnie": "ray"}, {"engine", "ray"})


# --- typed settings: every environment validates; no code default contradicts conf/base -------

#: The blocks with a typed settings model, and how a block is validated as a pipeline reads it.
TYPED_BLOCKS: dict[str, type[Settings]] = {
    "training": TrainingSettings,
    "quantization": QuantizationSettings,
    "splitting": SplittingSettings,
    "ingestion": IngestionSettings,
    "labelling": LabellingSettings,
    "model_card": ModelCardSettings,
    "feedback": FeedbackSettings,
    "retrain_check": RetrainSettings,
    "serving": ServingSettings,
    "review_queue": ReviewQueueSettings,
    "batch_scoring": BatchScoringSettings,
}

ENVIRONMENTS = ["base", "local", "aws", "s3", "test"]


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's conf/ with the ``test`` environment from tests/conf_test."""
    conf = tmp_path_factory.mktemp("parameters") / "conf"
    shutil.copytree(REPO / "conf", conf)
    shutil.copytree(REPO / "tests" / "conf_test", conf / "test", dirs_exist_ok=True)
    return conf


def _parameters(env: str, conf: Path) -> dict[str, Any]:
    """``env`` merged over ``conf/base`` as ``kedro run --env`` loads it (settings.py's loader)."""
    loader = OmegaConfigLoader(str(conf), env=None if env == "base" else env, **CONFIG_LOADER_ARGS)
    return dict(loader["parameters"])


def _validate(block: str, params: Mapping[str, Any]) -> None:
    """Validate a block the way its pipeline does (training: per candidate too)."""
    model = TYPED_BLOCKS[block]
    if block == "training":
        for candidate in candidate_names(params):
            candidate_settings(params, candidate)
    if block == "quantization":
        for architecture in (None, *params.get("by_architecture", {})):
            QuantizationSettings.from_params(params, architecture)
    model.parse(params)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_validates_against_the_typed_settings(env: str, conf_dir: Path) -> None:
    parameters = _parameters(env, conf_dir)
    for block in TYPED_BLOCKS:
        assert block in parameters, f"{env}: no {block} block"
        _validate(block, parameters[block])


@pytest.mark.parametrize("block", sorted(TYPED_BLOCKS))
def test_no_code_default_contradicts_conf_base(block: str, conf_dir: Path) -> None:
    """Each default of a settings model is the value conf/base gives it (recursively)."""
    model = TYPED_BLOCKS[block]
    from_yaml = model.parse(_parameters("base", conf_dir)[block])
    contradictions = {}
    for name, field in model.model_fields.items():
        if field.is_required():  # no default in code: conf/base is the one place
            continue
        default = field.get_default(call_default_factory=True)
        if getattr(from_yaml, name) != default:
            contradictions[name] = (default, getattr(from_yaml, name))
    assert contradictions == {}, f"{block}: code default vs conf/base: {contradictions}"


@pytest.mark.parametrize(
    ("block", "path", "typo", "hint"),
    [
        ("training", ["features"], "engin", "engine"),
        ("training", [], "epoch", "epochs"),
        ("quantization", ["calibration"], "target_fp", "target_fpr"),
        ("splitting", ["near_duplicates"], "max_distanse", "max_distance"),
        ("ingestion", [], "min_sides", "min_side"),
        ("labelling", ["label_sources"], "folders", "folder"),
        ("model_card", [], "ui_ur", "ui_url"),
        ("feedback", [], "conflict_rul", "conflict_rule"),
        ("retrain_check", [], "min_new_feedbak", "min_new_feedback"),
        ("retrain_check", ["drift"], "psi_alrt", "psi_alert"),
        ("serving", [], "foregrond", "foreground"),
        ("serving", ["smoke_test"], "max_imags", "max_images"),
        ("review_queue", [], "audit_rat", "audit_rate"),
        ("batch_scoring", [], "engin", "engine"),
        ("batch_scoring", ["ray"], "wokers", "workers"),
    ],
)
def test_a_misspelt_key_names_the_closest_one(
    block: str, path: list[str], typo: str, hint: str, conf_dir: Path
) -> None:
    params = copy.deepcopy(_parameters("base", conf_dir)[block])
    nested = params
    for part in path:
        nested = nested[part]
    nested[typo] = 1
    kind = ".".join([block, *path])
    message = rf"Unknown {kind} parameter\(s\) '{typo}' \(did you mean '{hint}'\?\)"
    with pytest.raises(ValueError, match=message):
        _validate(block, params)


def test_the_model_name_is_written_once_in_globals(conf_dir: Path) -> None:
    parameters = _parameters("base", conf_dir)
    names = {
        parameters[block]["model_name"] for block in ("registration", "serving", "batch_scoring")
    }
    assert names == {"eyecatcher-moderation"}
    hits = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "conf").rglob("*.yml")
        if "eyecatcher-moderation" in path.read_text()
    ]
    assert hits == ["conf/base/globals.yml"]
