"""The repository's facts for :mod:`tests.docs.claims`: parameters, catalog, pipelines, targets."""

from __future__ import annotations

import copy
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from tests.docs.claims import Project, git_ignored, library_file_search

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
DATA_ROOT = "${globals:data_root}"
CODE_GLOBS = (
    "src/**/*.py",
    "conf/**/*.yml",
    "conf/local/credentials.yml.template",
    "deploy/**/*",
    "scripts/**/*.py",
    "benchmarks/**/*.py",
    "Makefile",
    "pyproject.toml",
)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _yaml_files(env: str, prefix: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((CONF / env).glob(f"{prefix}*.yml")):
        merged = _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def environments() -> list[str]:
    """conf/base and every environment folder next to it (local holds no parameters)."""
    return sorted(p.name for p in CONF.iterdir() if p.is_dir())


def parameters() -> dict[str, dict[str, Any]]:
    """Each environment's parameters soft-merged over base, as Kedro merges them (raw YAML:
    the keys are what a doc names)."""
    base = _yaml_files("base", "parameters")
    return {env: _merge(base, _yaml_files(env, "parameters")) for env in environments()}


def _paths(entry: Any) -> list[str]:
    found: list[str] = []
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in {"filepath", "path"} and isinstance(value, str):
                found.append(value)
            elif key == "seed_filepaths" and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
            else:
                found.extend(_paths(value))
    return found


def catalog() -> tuple[set[str], set[str]]:
    """Entry names (with factory patterns) and their data/ paths, over every environment."""
    names: set[str] = set()
    paths: set[str] = set()
    for env in environments():
        for name, entry in _yaml_files(env, "catalog").items():
            if name.startswith("_"):
                continue
            names.add(name)
            for path in _paths(entry):
                paths.add(path.replace(DATA_ROOT, "data"))
    return names, {p for p in paths if p.startswith("data/")}


def pipelines() -> set[str]:
    """Pipeline folders (find_pipelines registers each ``pipelines/<name>/pipeline.py``)."""
    folder = REPO / "src" / "eyecatcher" / "pipelines"
    return {p.parent.name for p in folder.glob("*/pipeline.py")} | {"__default__"}


def make_targets() -> set[str]:
    """Targets defined in the Makefile."""
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def code_text() -> str:
    """The project's code and configuration, where a named variable or tag must appear."""
    parts = []
    for pattern in CODE_GLOBS:
        for path in sorted(REPO.glob(pattern)):
            if path.is_file():
                parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def parse_run(args: list[str]) -> None:
    """Parse a ``kedro run`` argument list with the project's own command (nothing runs)."""
    from eyecatcher.cli import run

    run.make_context("run", list(args))


def repository_project() -> Project:
    """The facts of this repository."""
    names, paths = catalog()
    return Project(
        root=REPO,
        parameters=parameters(),
        catalog=names,
        catalog_paths=paths,
        pipelines=pipelines(),
        make_targets=make_targets(),
        code_text=code_text(),
        parse_run=parse_run,
        library_source=library_file_search(Path(sysconfig.get_paths()["purelib"])),
        is_ignored=git_ignored(REPO),
        test_text="\n".join(p.read_text() for p in sorted((REPO / "tests").rglob("*.py"))),
    )
