"""Project commands: Kedro's own ``run``, with exit codes that tell CI what happened.

Kedro loads this module's ``cli`` group for ``kedro ...`` inside the project and
``python -m eyecatcher`` runs its ``run``; every other command stays Kedro's. Kedro's ``run``
exits 1 for any exception, so a refused gate, a due retrain, a dry run and a crash would look
the same to CI. This ``run`` takes the same options and maps the exception to the codes of
:mod:`eyecatcher.outcomes` (docs/configuration.md#exit-codes): an outcome or a configuration
error prints one line and exits with its code; anything else keeps its traceback and exits 1.
"""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from eyecatcher.outcomes import EXIT_FAILED, outcome_of

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed, 2 bad configuration, 3 registration gate refused, "
    "4 retraining due, 5 dry run (docs/configuration.md#exit-codes)."
)


@click.group(name="EyeCatcher")
def cli() -> None:
    """EyeCatcher's project commands."""


def _run(**kwargs: Any) -> Any:
    try:
        return kedro_run.callback(**kwargs)
    except Exception as error:
        outcome, code = outcome_of(error)
        if code == EXIT_FAILED:
            raise
        click.secho(f"{outcome} (exit code {code}): {error}", err=True, fg="yellow")
        raise click.exceptions.Exit(code) from error


run = click.Command(
    name="run",
    callback=_run,
    params=list(kedro_run.params),
    help=f"{kedro_run.help}\n\n{EXIT_CODES_HELP}",
    short_help="Run the pipeline (exit codes: see --help).",
)
cli.add_command(run)
