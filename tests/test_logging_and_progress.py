"""conf/logging.yml and conf/logging_json.yml as Kedro loads them; progress bars off a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eyecatcher.json_logging import JsonFormatter
from eyecatcher.progress import PROGRESS_ENV, progress_bar, progress_enabled

REPO = Path(__file__).resolve().parents[1]

_LOG_AND_EXIT = """
import logging
import kedro.framework.project  # applies KEDRO_LOGGING_CONFIG (or conf/logging.yml), as kedro run
logging.getLogger("eyecatcher.check").info('a "quoted" message: %s', 42)
logging.getLogger("botocore.endpoint").info("chatter that stays below WARNING")
"""


def _python(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LOG_AND_EXIT],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_logging_config_writes_one_json_object_per_line() -> None:
    result = _python(
        {
            "KEDRO_LOGGING_CONFIG": str(REPO / "conf" / "logging_json.yml"),
            "KEDRO_LOGGING_MODULE_ALLOWLIST": "eyecatcher.json_logging",
        }
    )
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    ours = [r for r in records if r["logger"] == "eyecatcher.check"]
    assert [r["message"] for r in ours] == ['a "quoted" message: 42']
    assert ours[0]["level"] == "INFO" and ours[0]["time"].endswith("+00:00")
    assert not any(r["logger"].startswith("botocore") for r in records)


def test_project_logging_config_is_the_default() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEDRO_LOGGING")}
    result = subprocess.run(
        [sys.executable, "-c", _LOG_AND_EXIT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    output = result.stdout + result.stderr
    assert "conf/logging.yml" in output.replace("\n", "").replace(" ", "")
    assert 'a "quoted" message: 42' in output
    assert "chatter that stays below WARNING" not in output


def test_json_formatter_keeps_exceptions_on_one_line() -> None:
    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert 'ValueError: bad "value"' in json.loads(line)["exception"]


def test_progress_bars_draw_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    redirected, terminal = io.StringIO(), _Terminal()
    assert list(progress_bar(range(3), file=redirected, desc="quiet")) == [0, 1, 2]
    assert redirected.getvalue() == ""
    list(progress_bar(range(3), file=terminal, desc="shown"))
    assert "shown" in terminal.getvalue()
    # disable=True still wins on a terminal.
    silent = _Terminal()
    list(progress_bar(range(3), file=silent, disable=True))
    assert silent.getvalue() == ""


def test_progress_env_overrides_and_refuses_unknown_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "always")
    assert progress_enabled(io.StringIO())
    monkeypatch.setenv(PROGRESS_ENV, "never")
    assert not progress_enabled(_Terminal())
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match="EYECATCHER_PROGRESS='sometimes'"):
        progress_enabled()


def test_mlflow_transfer_bars_are_off_when_ours_are() -> None:
    """Off a terminal, the project's settings switch MLflow's own artifact bars off too."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    env.pop(PROGRESS_ENV, None)
    variable = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    show = f"import os, eyecatcher.settings; print(os.environ['{variable}'])"
    result = subprocess.run(
        [sys.executable, "-c", show],
        cwd=REPO,
        env=env,
        capture_output=True,  # stderr is a pipe, not a terminal
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "false"
