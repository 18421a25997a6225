"""The docs checker itself, on tiny synthetic docs and a hand-made project: it finds each kind
of claim, and a doc that was true fails once the name it uses is removed."""

from __future__ import annotations

import copy
from pathlib import Path

import click
import pytest

from tests.docs.claims import Project, check_doc

DOC = """# Tiny

Raise `registration.gate.min_test_accuracy` or run

```bash
kedro run --pipelines registration --params "registration.gate.min_test_accuracy=0.7"
make serve
```

Catalog entry `model_card` lands in `data/08_reporting/model_card.html`; the endpoint comes
from `EYECATCHER_S3_PREFIX`. See [the guide](guide.md) and `conf/base/globals.yml`.
"""


@click.command()
@click.option("--pipelines", default="")
@click.option("--params", default="")
def _run(pipelines: str, params: str) -> None:
    """A stand-in for `kedro run` with the two options the doc uses."""


def _project(tmp_path: Path) -> Project:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# guide\n")
    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "base" / "globals.yml").write_text("data_root: data\n")
    return Project(
        root=tmp_path,
        parameters={"base": {"registration": {"gate": {"min_test_accuracy": 0.6}}}},
        catalog={"model_card"},
        catalog_paths={"data/08_reporting/model_card.html"},
        pipelines={"registration", "__default__"},
        make_targets={"serve", "help"},
        code_text="prefix: ${eyecatcher.env:EYECATCHER_S3_PREFIX,s3://x}",
        parse_run=lambda args: _run.make_context("run", list(args)),
    )


def _problems(tmp_path: Path, project: Project, doc: str = DOC) -> list[str]:
    (tmp_path / "docs" / "tiny.md").write_text(doc)
    return [f"{p.kind} {p.name}" for p in check_doc("docs/tiny.md", doc, project)]


def test_a_true_doc_has_no_problems(tmp_path: Path) -> None:
    assert _problems(tmp_path, _project(tmp_path)) == []


def test_removing_a_named_parameter_key_fails_the_doc(tmp_path: Path) -> None:
    project = _project(tmp_path)
    project.parameters = copy.deepcopy(project.parameters)
    del project.parameters["base"]["registration"]["gate"]["min_test_accuracy"]
    assert _problems(tmp_path, project) == ["parameter registration.gate.min_test_accuracy"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.catalog.clear(), "catalog entry model_card"),
        (lambda p: p.catalog_paths.clear(), "path data/08_reporting/model_card.html"),
        (lambda p: p.pipelines.discard("registration"), "pipeline registration"),
        (lambda p: p.make_targets.discard("serve"), "make target serve"),
        (lambda p: setattr(p, "code_text", ""), "environment variable EYECATCHER_S3_PREFIX"),
        (lambda p: (p.root / "docs" / "guide.md").unlink(), "link guide.md"),
        (lambda p: (p.root / "conf/base/globals.yml").unlink(), "path conf/base/globals.yml"),
    ],
)
def test_each_kind_of_name_fails_when_it_is_gone(tmp_path: Path, change, expected) -> None:
    project = _project(tmp_path)
    change(project)
    problems = _problems(tmp_path, project)
    assert expected in problems, problems


def test_a_command_that_does_not_parse_fails(tmp_path: Path) -> None:
    doc = "Run `kedro run --pipeline registration` (a removed option).\n"
    assert _problems(tmp_path, _project(tmp_path), doc) == [
        "kedro run command kedro run --pipeline registration"
    ]


def test_prose_and_option_mentions_are_not_commands(tmp_path: Path) -> None:
    doc = "```\nkedro run ──▶ registration\n```\nSee `kedro run --params` for overrides.\n"
    assert _problems(tmp_path, _project(tmp_path), doc) == []


def test_metric_names_the_code_writes_are_not_parameter_keys(tmp_path: Path) -> None:
    project = _project(tmp_path)
    project.code_text += '\nmetrics = {"gate_passed": 1.0}\n'
    doc = "MLflow shows `registration.gate_passed` and `registration.gate_missing`.\n"
    assert _problems(tmp_path, project, doc) == ["parameter registration.gate_missing"]
