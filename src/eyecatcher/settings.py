"""Project settings: the config loader and environments.

Hooks come from installed plugins (kedro-mlflow registers its own); see
``docs/architecture.md`` for where MLflow state lives.
"""

import os
import warnings

from kedro.config import OmegaConfigLoader

from eyecatcher.candidates import CandidateConfigHook
from eyecatcher.mlflow_review import ReviewerTrackingHook
from eyecatcher.outcomes import OutcomeHook
from eyecatcher.progress import progress_enabled
from eyecatcher.redaction import RedactionHook, deployment_env

# Telemetry must never reach the network from this project, whoever launches it.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# MLflow draws its own artifact-transfer bars; off a terminal they would fill CI logs like ours
# would (eyecatcher.progress decides, EYECATCHER_PROGRESS overrides).
if not progress_enabled():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Third-party deprecation chatter printed on every run buries the warnings that matter here
# (random weights, skipped gates); these two are not actionable by a user of this project.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `oc.env` stays where Kedro allows it (credentials). Non-secret deployment facts (tracking
    # URI, S3 prefix, region, endpoints) come from an allow-list: see docs/configuration.md.
    "custom_resolvers": {"eyecatcher.env": deployment_env},
    # An environment overrides single keys (`conf/aws` changes `ingestion.sources`) and keeps
    # the rest of the block from `conf/base`, instead of replacing the whole block.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}

# Project hooks run beside the plugins' own (kedro-mlflow's is auto-registered). The candidate
# hook lets `create_pipeline()` see the run's `--env`/`--params` when it lists the training
# candidates; the redaction hook runs before kedro-mlflow logs parameters and tags.
# The reviewer hook names runs, sets the experiment's kind and logs dataset inputs. The
# outcome hook tags the run with how it ended and keeps a refused gate, a due retrain or a dry
# run FINISHED instead of FAILED (docs/configuration.md#exit-codes).
HOOKS = (CandidateConfigHook(), RedactionHook(), ReviewerTrackingHook(), OutcomeHook())
