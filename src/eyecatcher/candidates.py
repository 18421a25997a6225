"""The training candidates named in config, available when pipelines are registered.

Kedro calls ``create_pipeline()`` without parameters, yet the training pipeline is instantiated
once per candidate listed under ``training.candidates``. :func:`configured_candidates` reads that
list from the project's configuration for the environment of the current run:

* during a ``kedro run`` (CLI or ``KedroSession``), :class:`CandidateConfigHook` captures the
  run's config loader in ``after_context_created`` -- before Kedro first reads the pipelines --
  so ``--env`` and ``--params`` are honoured;
* elsewhere (``kedro registry list``, a notebook, a script), the environment is ``KEDRO_ENV`` or
  the project's default run environment, read from ``conf/`` under the current Kedro project.

Limitation: Kedro caches registered pipelines per process. A second session with another
environment in the same process sees the candidate list of the first one unless the project is
bootstrapped again (``bootstrap_project`` resets the cache) or asks for other pipelines.
The quantization pipeline uses the same function, so both always agree on the candidates.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.hooks import hook_impl

from eyecatcher.parameters import closest

#: Candidate names become Kedro namespaces and folder names: keep them to safe characters.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

logger = logging.getLogger(__name__)

#: Per-candidate keys that have no shared default in ``training``.
_CANDIDATE_ONLY_KEYS = frozenset({"architecture", "weights_seed"})

# Each ignored-override warning once per process, not once per node that reads the config.
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


_captured: dict[str, Any] = {}


class CandidateConfigError(ValueError):
    """``training.candidates`` is missing or malformed."""


class CandidateConfigHook:
    """Remember the config loader of the current run for :func:`configured_candidates`."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Capture the run's config loader (it knows ``--env`` and ``--params``).

        Args:
            context: The ``KedroContext`` just created by the session.
        """
        _captured["config_loader"] = context.config_loader
        _captured["env"] = context.env


def _find_project_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "conf").is_dir():
            return folder
    raise CandidateConfigError(
        f"No Kedro project (pyproject.toml and conf/) found at or above {start}; "
        "pass `project_path` or run from inside the project."
    )


def _fresh_config_loader(project_path: Path, env: str | None) -> AbstractConfigLoader:
    from kedro.framework.project import settings

    loader_args = dict(settings.CONFIG_LOADER_ARGS)
    conf_source = project_path / settings.CONF_SOURCE
    return settings.CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=env, **loader_args)


def training_parameters(
    env: str | None = None, project_path: str | Path | None = None
) -> dict[str, Any]:
    """The ``training`` parameter block for a run environment.

    Args:
        env: Configuration environment. ``None`` means the current run's environment when a
            Kedro session created a context in this process, else ``KEDRO_ENV``, else the
            project's default run environment.
        project_path: Project root; ``None`` finds it from the current working directory.

    Returns:
        The merged ``training`` block (base plus environment overrides).

    Raises:
        CandidateConfigError: If the configuration has no ``training`` block.
    """
    loader = _captured.get("config_loader")
    if loader is not None and not Path(str(loader.conf_source)).is_dir():
        # Captured from a session on a project that is gone (a test's temporary copy).
        loader = None
    if env is not None or project_path is not None or loader is None:
        root = Path(project_path) if project_path else _find_project_root(Path.cwd())
        loader = _fresh_config_loader(root, env or os.environ.get("KEDRO_ENV"))
    parameters = loader["parameters"]
    if "training" not in parameters:
        raise CandidateConfigError(
            "No `training` block in the parameters (conf/<env>/parameters_training.yml)."
        )
    return dict(parameters["training"])


def candidate_names(training: Mapping[str, Any]) -> list[str]:
    """Validated candidate names, in config order, from a ``training`` parameter block.

    ``training.candidates`` is a **list** of names. (A list, not a mapping: parameters are
    soft-merged across environments, and a list in ``conf/<env>`` replaces the base list
    where a mapping would be merged into it, so an environment could never drop a base
    candidate.) Per-candidate settings live in ``training.candidate_overrides``.

    Args:
        training: The ``training`` parameters.

    Returns:
        The candidate names.

    Raises:
        CandidateConfigError: If the list is missing, empty, has duplicates or bad names.
    """
    candidates = training.get("candidates")
    if not candidates:
        raise CandidateConfigError("`training.candidates` must name at least one candidate.")
    if not isinstance(candidates, list | tuple):
        raise CandidateConfigError(
            "`training.candidates` must be a list of names (settings per candidate go under "
            f"`training.candidate_overrides`), got {type(candidates).__name__}."
        )
    names = [str(item) for item in candidates]
    if len(set(names)) != len(names):
        raise CandidateConfigError(f"Duplicate candidate names in {names}.")
    bad = [name for name in names if not _NAME.match(name)]
    if bad:
        raise CandidateConfigError(
            f"Candidate names {bad} are not usable as Kedro namespaces: use letters, digits "
            "and underscores (and set `architecture` in candidate_overrides for timm names "
            "with dots or dashes)."
        )
    return names


def configured_candidates(
    env: str | None = None, project_path: str | Path | None = None
) -> list[str]:
    """The candidate names configured under ``training.candidates``.

    Args:
        env: See :func:`training_parameters`.
        project_path: See :func:`training_parameters`.

    Returns:
        Candidate names in config order (each becomes a Kedro namespace).
    """
    return candidate_names(training_parameters(env, project_path))


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def candidate_config(training: Mapping[str, Any], candidate: str) -> dict[str, Any]:
    """The effective settings of one candidate: the shared block with its overrides applied.

    Every key of ``training`` except ``candidates`` and ``candidate_overrides`` is a default
    for all candidates; ``candidate_overrides.<name>`` overrides any of them (nested mappings
    are merged key by key). ``architecture`` defaults to the candidate's name.

    Args:
        training: The ``training`` parameters.
        candidate: One of :func:`candidate_names`.

    Returns:
        A fresh dict with ``name`` and ``architecture`` always set.

    Raises:
        CandidateConfigError: If ``candidate`` is not configured.
    """
    names = candidate_names(training)
    if candidate not in names:
        raise CandidateConfigError(f"Unknown candidate '{candidate}'; configured: {names}.")
    all_overrides = training.get("candidate_overrides") or {}
    overrides = all_overrides.get(candidate) or {}
    shared = {
        key: value
        for key, value in training.items()
        if key not in {"candidates", "candidate_overrides"}
    }
    # A misspelt candidate or setting name would otherwise be ignored without a word (a
    # checkpoint path that never applies, epochs that never change).
    for name in sorted(set(all_overrides) - set(names)):
        match = closest(name, names)
        _warn_once(
            f"training.candidate_overrides.{name} is IGNORED: '{name}' is not among the "
            f"candidates {names}" + (f" (did you mean '{match}'?)" if match else "")
        )
    ignored = set(overrides) - set(shared) - _CANDIDATE_ONLY_KEYS
    for key in sorted(ignored):
        match = closest(key, [*shared, *_CANDIDATE_ONLY_KEYS])
        _warn_once(
            f"training.candidate_overrides.{candidate}.{key} is not a training setting and is "
            "IGNORED" + (f" (did you mean '{match}'?)" if match else "")
        )
    # Left out, as the warning says: the candidate's settings refuse unknown keys.
    config = _deep_merge(shared, {k: v for k, v in overrides.items() if k not in ignored})
    config["name"] = candidate
    config.setdefault("architecture", candidate)
    return config
