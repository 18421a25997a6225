"""README.md and docs/ against the project: every name they use exists (tests/docs/claims.py).

A doc that drifts from the code (a renamed parameter, a removed file, a pipeline or make target
that is gone, a `kedro run` command that no longer parses) fails here with the line to fix.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from tests.docs.claims import Project, check_doc
from tests.docs.project_facts import REPO, repository_project

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def project() -> Project:
    return repository_project()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_name_in_the_doc_exists(doc: Path, project: Project) -> None:
    problems = check_doc(str(doc.relative_to(REPO)), doc.read_text(), project)
    assert not problems, "\n".join(map(str, problems))


def test_every_parameter_file_is_documented_in_configuration_md() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    files = sorted(p.name for p in (REPO / "conf" / "base").glob("parameters*.yml"))
    missing = [name for name in files if name not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_readme_names_every_make_target_that_has_a_description(project: Project) -> None:
    described = re.findall(
        r"^([a-zA-Z][\w-]*):[^\n]*## ", (REPO / "Makefile").read_text(), re.MULTILINE
    )
    readme = (REPO / "README.md").read_text()
    missing = [t for t in described if f"make {t}" not in readme]
    assert not missing, f"README.md does not mention {missing}"


def _parse(group: click.Group, prog: str, args: list[str]) -> None:
    """Parse ``args`` down to the leaf command, as the CLI would before running it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click's protected_args
        ctx = group.make_context(prog, list(args))
        tokens = [*ctx.protected_args, *ctx.args]
    name, command, rest = group.resolve_command(ctx, tokens)
    assert command is not None, f"{prog}: no command {tokens[:1]}"
    if isinstance(command, click.Group):
        _parse(command, name, rest)
        return
    try:
        command.make_context(name, rest, parent=ctx)
    except click.MissingParameter:
        # Prose naming a command ("served behind `mlflow models serve`"): the command exists;
        # unknown options and bad values still fail.
        if rest:
            raise


def test_the_tours_mlflow_and_kedro_viz_commands_parse() -> None:
    """README's other commands (kedro run ones are checked above), through their own CLIs."""
    from kedro_viz.launchers.cli.main import viz_cli
    from mlflow.cli import cli as mlflow_cli

    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"(?:\.venv/bin/)?((?:mlflow|kedro viz) [^`\n)]+)", readme)
    assert commands, "README.md names no mlflow or kedro viz command"
    for command in commands:
        args = shlex.split(command)
        if args[0] == "mlflow":
            _parse(mlflow_cli, "mlflow", args[1:])
        else:
            _parse(viz_cli, "kedro", args[1:])
