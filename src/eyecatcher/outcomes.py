"""How a run ends, for CI and for MLflow: exit codes and the ``eyecatcher.outcome`` run tag.

A refused gate, a due retrain and a dry run are answers, not crashes: CI branches on them and
the MLflow UI should not show them as failed runs. Nodes say so by raising a :class:`RunOutcome`
subclass (after every report is saved, so nothing computed is lost); ``kedro run`` (the project
command in :mod:`eyecatcher.cli`) maps the exception to its exit code, and
:class:`OutcomeHook` marks the ``kedro run``'s MLflow run FINISHED with the outcome tag instead
of FAILED. One table of codes, in ``docs/configuration.md#exit-codes``:

==== ==================== ===========================================================
code outcome              MLflow run
==== ==================== ===========================================================
0    ``ok``               FINISHED
1    ``failed``           FAILED (any other exception: a bug, an unreachable service)
2    ``bad_configuration`` FAILED (a setting refused; nothing was run or written)
3    ``gate_refused``     FINISHED (registration left the champion where it was)
4    ``retrain_due``      FINISHED (the retrain check asks for ``kedro run``)
5    ``dry_run``          FINISHED (estimate printed; nothing sent or written)
==== ==================== ===========================================================
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

OUTCOME_TAG = "eyecatcher.outcome"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIGURATION = 2


class RunOutcome(Exception):
    """A normal end of a run that is not a success: raised by a node, after its reports."""

    outcome: ClassVar[str]
    exit_code: ClassVar[int]


class GateRefused(RunOutcome):
    """Registration refused the candidate and the settings ask the run to say so."""

    outcome = "gate_refused"
    exit_code = 3


class RetrainDue(RunOutcome):
    """The retrain check found retraining due and the settings ask the run to say so."""

    outcome = "retrain_due"
    exit_code = 4


class DryRunDone(RunOutcome):
    """A dry run printed its estimate and stopped the run before anything was sent."""

    outcome = "dry_run"
    exit_code = 5


class ConfigurationError(ValueError):
    """A setting that cannot be used (the message names it); exit code 2."""


def _configuration_errors() -> tuple[type[BaseException], ...]:
    """Kedro's and OmegaConf's own errors for configuration that cannot be read or resolved."""
    from kedro.config import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    return (ConfigurationError, MissingConfigException, OmegaConfBaseException)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (Kedro may re-raise a node's error)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def outcome_of(error: BaseException) -> tuple[str, int]:
    """The outcome name and exit code of a run that ended with ``error``.

    Args:
        error: What ``session.run`` (or the CLI) raised.

    Returns:
        ``(outcome, exit_code)``, e.g. ``("gate_refused", 3)``; ``("failed", 1)`` for anything
        that is neither an outcome nor a configuration error.
    """
    chain = _chain(error)
    for item in chain:
        if isinstance(item, RunOutcome):
            return item.outcome, item.exit_code
    configuration = _configuration_errors()
    for item in chain:
        if isinstance(item, configuration):
            return "bad_configuration", EXIT_BAD_CONFIGURATION
    return "failed", EXIT_FAILED


class OutcomeHook:
    """Tags the ``kedro run``'s MLflow run with its outcome; a :class:`RunOutcome` ends FINISHED.

    kedro-mlflow ends every active run as FAILED in its ``on_pipeline_error``; this hook runs
    after it (``trylast``) and sets the run it recorded at the start back to FINISHED when the
    error is an outcome, so the UI's status tells a refusal from a crash. Every run gets the
    ``eyecatcher.outcome`` tag (``ok`` on success).
    """

    # mlflow is imported in the hooks, not at the top: the project's ``kedro run`` command
    # imports this module for the exit codes, and `kedro run --help` should not wait for MLflow.

    def __init__(self) -> None:
        self._run_id: str | None = None

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Remember the run kedro-mlflow opened (None when tracking is off)."""
        import mlflow

        active = mlflow.active_run()
        self._run_id = active.info.run_id if active is not None else None

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Tag a successful run ``ok`` while it is still open."""
        from eyecatcher.registry.client import registry_client

        if self._run_id is not None:
            registry_client().set_tag(self._run_id, OUTCOME_TAG, "ok")
        self._run_id = None

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any]) -> None:
        """Tag the run with the outcome; an outcome's run is FINISHED, not FAILED."""
        if self._run_id is None:
            return
        from mlflow.entities import RunStatus

        from eyecatcher.registry.client import registry_client

        run_id, self._run_id = self._run_id, None
        outcome, _ = outcome_of(error)
        client = registry_client()
        client.set_tag(run_id, OUTCOME_TAG, outcome)
        if any(isinstance(item, RunOutcome) for item in _chain(error)):
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
            logger.info("MLflow run %s: %s (FINISHED, not a failure).", run_id, outcome)
