"""What README.md and docs/ name, checked against the project: the docs tests' machinery.

A doc claims that a parameter key, a file, a ``make`` target, a pipeline, a catalog entry or an
environment variable exists whenever it names one. :func:`check_doc` finds those names in a
Markdown text and returns one problem per name that the :class:`Project` does not have, so a
doc that drifts from the code fails ``make test`` with the line to fix.

The rules (what counts as a claim) are deliberately few and literal:

- a code span or code block token whose first dotted part is a parameter block
  (``registration.gate.min_test_accuracy``, ``--params "training.epochs=20"``) is a parameter
  key; it must exist in some environment's parameters, or be a name the code writes (an MLflow
  tag or metric such as ``registration.model_version``, found as a string in ``src/``);
- a code span that looks like a path under a top-level folder of the repository
  (``conf/base/globals.yml``), and every relative Markdown link, is a file; ``data/`` paths
  may be catalog outputs (``data/08_reporting/model_card.html``), ``<x>``/``{x}`` are wildcards;
- ``make <target>``, ``--pipelines <name>`` and ``kedro run`` commands are checked against the
  Makefile, the pipeline folders and the project's own ``run`` command (parsed, not run);
- a code span following "catalog entry"/"catalog entries" is a catalog entry (factory patterns
  such as ``{candidate}.model_bundle`` match their instances);
- an UPPER_CASE name with an underscore in a code span is an environment variable (or a
  constant): it must appear in the project's code or configuration, or in the source of the
  library that reads it (:data:`LIBRARY_VARIABLES`).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z0-9_*{}<>\[\]-]+)+)")
ENV_NAME = re.compile(r"(?<![\w.$-])\$?\{?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")
MAKE = re.compile(r"(?<![\w-])make\s+([a-z][\w-]*)")
PIPELINES = re.compile(r"--pipelines?(?:\s+|=)\"?([a-z_][\w,]*)")
CATALOG_ENTRY = re.compile(
    r"catalog entr(?:y|ies)\s*((?:`[^`]+`(?:\s*,\s*|\s+and\s+|\s+or\s+)?)+)", re.IGNORECASE
)
PATH_LIKE = re.compile(r"^\.?/?[\w.{}<>*-]+(?:/[\w.{}<>*=-]*)+$")
KEDRO_RUN = re.compile(r"(?:\S*/)?kedro run(?:\s+[^`\n|;&#]*)?")

# Variables that libraries read, not the project: each must appear in that file of the installed
# package (checked), so a typo in a doc still fails.
LIBRARY_VARIABLES: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "botocore/credentials.py",
    "AWS_SECRET_ACCESS_KEY": "botocore/credentials.py",
    "AWS_SESSION_TOKEN": "botocore/credentials.py",
    "AWS_PROFILE": "botocore/configprovider.py",
    "AWS_DEFAULT_REGION": "botocore/configprovider.py",
    "AWS_ENDPOINT_URL": "botocore/configprovider.py",
    "AWS_CONFIG_FILE": "botocore/configprovider.py",
    "AWS_SHARED_CREDENTIALS_FILE": "botocore/configprovider.py",
    "AWS_EC2_METADATA_DISABLED": "botocore/utils.py",
    "MLFLOW_TRACKING_URI": "mlflow/environment_variables.py",
    "MLFLOW_REGISTRY_URI": "mlflow/environment_variables.py",
    "MLFLOW_S3_ENDPOINT_URL": "mlflow/environment_variables.py",
    "MLFLOW_EXPERIMENT_NAME": "mlflow/environment_variables.py",
    "MLFLOW_TRACKING_USERNAME": "mlflow/environment_variables.py",
    "MLFLOW_TRACKING_PASSWORD": "mlflow/environment_variables.py",
    "MLFLOW_TRACKING_TOKEN": "mlflow/environment_variables.py",
    "KEDRO_LOGGING_CONFIG": "kedro/framework/project/__init__.py",
    "KEDRO_LOGGING_MODULE_ALLOWLIST": "kedro/framework/project/__init__.py",
    "KEDRO_DISABLE_TELEMETRY": "kedro_telemetry/plugin.py",
    "DO_NOT_TRACK": "kedro_telemetry/plugin.py",
}


@dataclass(frozen=True)
class Problem:
    """One name a doc uses that the project does not have."""

    doc: str
    line: int
    kind: str
    name: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.doc}:{self.line}: {self.kind} `{self.name}` does not exist{extra}"


@dataclass
class Project:
    """What exists: the facts a doc is checked against (built from the repository or by hand).

    Attributes:
        root: Repository root (files are looked up under it).
        parameters: Parameters of each environment, merged over base (``{"base": {...}}``).
        catalog: Catalog entry names and factory patterns of every environment.
        catalog_paths: ``data/...`` paths of catalog entries (patterns keep ``{x}``).
        pipelines: Registered pipeline names.
        make_targets: Targets of the Makefile.
        code_text: Text of the project's code and configuration, where names must appear.
        parse_run: Parses a ``kedro run`` argument list, raising on an unknown option.
        library_source: ``(file, name) -> bool``: whether a name appears in a library file.
        is_ignored: Whether git ignores a path (a documented output: ``mlruns/mlflow.db``).
        test_text: Text of the test suite: a variable that only the tests read (a docs
            section on running them) exists too.
    """

    root: Path
    parameters: Mapping[str, Mapping[str, Any]]
    catalog: set[str]
    catalog_paths: set[str]
    pipelines: set[str]
    make_targets: set[str]
    code_text: str
    parse_run: Callable[[list[str]], None] | None = None
    library_source: Callable[[str, str], bool] | None = None
    is_ignored: Callable[[str], bool] | None = None
    test_text: str = ""

    @property
    def blocks(self) -> set[str]:
        """Top-level parameter keys: a dotted name starting with one is a parameter claim."""
        return {key for params in self.parameters.values() for key in params}

    @property
    def words(self) -> frozenset[str]:
        """Every identifier-like word of :attr:`code_text`."""
        return _words(self.code_text)


@functools.lru_cache(maxsize=4)
def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _code(text: str) -> list[tuple[int, str, bool]]:
    """``(offset, code, is_block)`` of every code block and every code span outside blocks."""
    found: list[tuple[int, str, bool]] = []
    blanked = text
    for match in CODE_BLOCK.finditer(text):
        found.append((match.start(1), match.group(1), True))
        start, end = match.span()
        blanked = blanked[:start] + " " * (end - start) + blanked[end:]
    for match in CODE_SPAN.finditer(blanked):
        found.append((match.start(1), match.group(1), False))
    return found


def _has_key(tree: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if isinstance(tree, list):
        return any(_has_key(item, parts) for item in tree)
    if not isinstance(tree, Mapping):
        return False
    head, rest = parts[0], parts[1:]
    if head in {"*", "<candidate>", "{candidate}"} or head.startswith(("<", "{")):
        return any(_has_key(value, rest) for value in tree.values())
    return head in tree and _has_key(tree[head], rest)


def parameter_exists(project: Project, key: str) -> bool:
    """``key`` (dotted) in some environment's parameters, or a name the code writes.

    MLflow metrics and tags share the blocks' prefixes (``labelling.n_cached``: the catalog
    gives the prefix, the node the key), so a name whose last part is a word of the code
    (``n_cached``; ``records_<status>`` matches ``records_read``) exists too.
    """
    parts = [p for p in key.split(".") if p]
    if any(_has_key(params, parts) for params in project.parameters.values()):
        return True
    named = [p for p in parts[1:] if not p.startswith(("<", "{", "*"))]
    if not named:
        return False
    last = _glob(named[-1])
    if "*" not in last:
        return last in project.words
    return any(fnmatch.fnmatchcase(word, last) for word in project.words)


def _glob(pattern: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "*", pattern)


def path_exists(project: Project, path: str) -> bool:
    """A file or folder of the repository, or a ``data/`` path the catalog writes."""
    clean = path.split("#", 1)[0].rstrip("/").removeprefix("./")
    if not clean:
        return True
    pattern = _glob(clean)
    if "*" not in pattern and (project.root / pattern).exists():
        return True
    if "*" in pattern and any(project.root.glob(pattern)):
        return True
    if not clean.startswith("data/"):
        # A documented output that git ignores (mlruns/mlflow.db, kedro viz's build/).
        return bool(project.is_ignored) and any(
            project.is_ignored(candidate) for candidate in (pattern, pattern + "/")
        )
    # A catalog output, a folder holding one, or a file inside a folder dataset.
    written = {_glob(p) for p in project.catalog_paths}
    return any(
        fnmatch.fnmatch(w, pattern)
        or fnmatch.fnmatch(w, pattern + "/*")
        or fnmatch.fnmatch(pattern, w)
        or fnmatch.fnmatch(pattern, w + "/*")
        for w in written
    )


def catalog_has(project: Project, name: str) -> bool:
    """An entry, or an instance of a factory pattern (``{candidate}.model_bundle``)."""
    if name in project.catalog:
        return True
    wanted = _glob(name)
    return any(
        fnmatch.fnmatch(wanted, _glob(entry)) or fnmatch.fnmatch(_glob(entry), wanted)
        for entry in project.catalog
    )


def variable_exists(project: Project, name: str) -> bool:
    """Read by the project (code, configuration, Makefile, tests) or by the library it names."""
    if any(
        re.search(rf"\b{re.escape(name)}\b", text)
        for text in (project.code_text, project.test_text)
    ):
        return True
    package = LIBRARY_VARIABLES.get(name)
    return bool(package and project.library_source and project.library_source(package, name))


def _split_command(command: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", command)
    joined = re.sub(r"\s+", " ", joined).strip()
    try:
        return shlex.split(joined, comments=True)
    except ValueError:
        return joined.split()


def _params_keys(value: str) -> list[str]:
    keys = []
    for item in re.split(r",(?=[\w.]+=)", value):
        if "=" in item:
            keys.append(item.split("=", 1)[0].strip())
    return keys


def _run_commands(code: str, block: bool) -> Iterable[str]:
    text = re.sub(r"\\\n\s*", " ", code) if block else re.sub(r"\s+", " ", code)
    for line in text.splitlines():
        for match in KEDRO_RUN.finditer(line):
            yield match.group(0)


def check_doc(name: str, text: str, project: Project) -> list[Problem]:
    """Every name in ``text`` that the project does not have, as :class:`Problem` s.

    Args:
        name: The doc's path relative to the repository (used for links and messages).
        text: The Markdown.
        project: What exists.

    Returns:
        The problems, in the order they appear.
    """
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()

    def report(offset: int, kind: str, claim: str, detail: str = "") -> None:
        if (kind, claim) not in seen:
            seen.add((kind, claim))
            problems.append(Problem(name, _line_of(text, offset), kind, claim, detail))

    doc_folder = (project.root / name).parent
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        local = target.split("#", 1)[0]
        resolved = (doc_folder / local).resolve()
        try:
            relative = resolved.relative_to(project.root.resolve())
        except ValueError:
            report(match.start(1), "link", target, "outside the repository")
            continue
        if not path_exists(project, str(relative)):
            report(match.start(1), "link", target)

    for match in CATALOG_ENTRY.finditer(text):
        for entry in re.findall(r"`([^`]+)`", match.group(1)):
            if not catalog_has(project, entry):
                report(match.start(1), "catalog entry", entry)

    for offset, code, block in _code(text):
        flat = re.sub(r"\s+", " ", code)
        for target in MAKE.findall(flat):
            if target not in project.make_targets:
                report(offset, "make target", target)
        for names in PIPELINES.findall(flat):
            for pipeline in filter(None, names.split(",")):
                if pipeline not in project.pipelines:
                    report(offset, "pipeline", pipeline)
        for command in _run_commands(code, block):
            args = _split_command(command)[2:]
            if args and not args[0].startswith("-"):
                continue  # prose or a diagram ("kedro run ──▶ labelling"), not a command
            if args and args[-1].startswith("-") and "=" not in args[-1]:
                args = args[:-1]  # "`kedro run --params`" names the option
            if project.parse_run is not None:
                try:
                    project.parse_run(args)
                except Exception as exc:  # click's usage errors: the command does not parse
                    report(offset, "kedro run command", command, str(exc).splitlines()[0])
            for i, arg in enumerate(args):
                if arg == "--params" and i + 1 < len(args):
                    for key in _params_keys(args[i + 1]):
                        if not parameter_exists(project, key):
                            report(offset, "parameter", key)
        for token in DOTTED.findall(flat):
            key = token.split("=", 1)[0].rstrip(".")
            if key.split(".", 1)[0] in project.blocks and not parameter_exists(project, key):
                report(offset, "parameter", key)
        for variable in ENV_NAME.findall(flat):
            if not variable_exists(project, variable):
                report(offset, "environment variable", variable)
        stripped = code.strip()
        if (
            PATH_LIKE.match(stripped)
            and stripped.split("/", 1)[0] in _top_level(project)
            and not path_exists(project, stripped)
        ):
            report(offset, "path", stripped)
    return problems


def _top_level(project: Project) -> set[str]:
    return {p.name for p in project.root.iterdir() if not p.name.startswith(".")} | {
        "data",
        "mlruns",
        "build",
    }


def library_file_search(site_packages: Path) -> Callable[[str, str], bool]:
    """A :attr:`Project.library_source` that reads one file of an installed package."""

    def search(relative: str, name: str) -> bool:
        path = site_packages / relative
        return path.is_file() and re.search(rf"\b{re.escape(name)}\b", path.read_text()) is not None

    return search


def git_ignored(root: Path) -> Callable[[str], bool]:
    """A :attr:`Project.is_ignored` that asks git (``git check-ignore``)."""

    def ignored(path: str) -> bool:
        answer = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", path], cwd=root, check=False, timeout=30
        )
        return answer.returncode == 0

    return ignored
