"""README.md and docs/ against the project: every name they use exists (tests/docs/claims.py).

A doc that drifts from the code (a renamed parameter, a removed file, a pipeline or make target
that is gone, a `kedro run` command that no longer parses) fails here with the line to fix.
"""

from __future__ import annotations

import re
from pathlib import Path

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
