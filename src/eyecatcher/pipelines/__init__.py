"""The Kedro pipelines: one subpackage each, found by ``kedro.framework.project.find_pipelines``.

Pipelines import the shared packages of ``eyecatcher`` and never each other (checked by
import-linter, see ``pyproject.toml`` and docs/architecture.md).
"""
