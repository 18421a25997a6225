"""Write conf/s3/catalog_*.yml from conf/base: every path under data/ moves under the S3 prefix.

Run from the project root after changing a base catalog entry that writes or reads under
``data/``::

    python deploy/s3/generate_conf.py

Each base entry with a path under ``data/`` is written again (an environment's catalog entry
replaces the base entry whole) with ``data/`` replaced by ``${globals:data_prefix}/`` and the
project's ``fs_args: ${globals:storage_options}``; ``MlflowArtifactDataset`` becomes
:class:`eyecatcher.mlflow_artifacts.StoredArtifactDataset`, which logs an ``s3://`` file to
MLflow. Entries without a path (metrics, the registry, the Rekognition endpoint) stay in base.
``tests/e2e/test_s3_environment.py`` checks that no path under ``data/`` is left.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "conf" / "base"
TARGET = ROOT / "conf" / "s3"

LOCAL_ROOT = "data/"
PREFIX = "${globals:data_prefix}/"
STORAGE_OPTIONS = "${globals:storage_options}"
MLFLOW_ARTIFACT = "kedro_mlflow.io.artifacts.MlflowArtifactDataset"
STORED_ARTIFACT = "eyecatcher.mlflow_artifacts.StoredArtifactDataset"
PATH_KEYS = ("filepath", "path")

HEADER = """\
# Generated from conf/base/{name} by deploy/s3/generate_conf.py; do not edit by hand:
# edit the base entry and run `python deploy/s3/generate_conf.py`. Every path under data/
# lives under ${{globals:data_prefix}} (EYECATCHER_S3_PREFIX, conf/s3/globals.yml), same layers.
"""


def _moved(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(LOCAL_ROOT):
        return PREFIX + value[len(LOCAL_ROOT) :]
    return value


def to_s3(entry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The entry with its paths under the prefix, and whether anything moved."""
    out = dict(entry)
    moved = False
    for key in PATH_KEYS:
        if _moved(out.get(key)) != out.get(key):
            out[key] = _moved(out[key])
            moved = True
    if isinstance(out.get("seed_filepaths"), list):
        seeds = [_moved(path) for path in out["seed_filepaths"]]
        moved |= seeds != out["seed_filepaths"]
        out["seed_filepaths"] = seeds
    if isinstance(out.get("dataset"), dict):
        inner, inner_moved = to_s3(out["dataset"])
        out["dataset"] = inner
        moved |= inner_moved
    if moved and any(key in out for key in PATH_KEYS):
        out["fs_args"] = STORAGE_OPTIONS
    if moved and out.get("type") == MLFLOW_ARTIFACT:
        out["type"] = STORED_ARTIFACT
        out["storage_options"] = STORAGE_OPTIONS
    if moved and "seed_filepaths" in out:
        out["fs_args"] = STORAGE_OPTIONS
    return out, moved


def generate() -> dict[str, str]:
    """``{file name: YAML text}`` of the s3 catalog files."""
    files = {}
    for path in sorted(BASE.glob("catalog_*.yml")):
        catalog = yaml.safe_load(path.read_text()) or {}
        moved = {}
        for name, entry in catalog.items():
            if not isinstance(entry, dict):
                continue
            converted, changed = to_s3(entry)
            if changed:
                moved[name] = converted
        if moved:
            text = HEADER.format(name=path.name) + "\n"
            text += yaml.safe_dump(moved, sort_keys=False, width=100)
            files[path.name] = text
    return files


def main() -> int:
    """Write the files; print what was written."""
    TARGET.mkdir(exist_ok=True)
    for name, text in generate().items():
        (TARGET / name).write_text(text)
        sys.stdout.write(f"wrote conf/s3/{name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
