"""One JSON object per log line, for CI and log collectors (conf/logging_json.yml).

Kedro only builds logging classes from modules it trusts: ``conf/logging_json.yml`` is chosen
with ``KEDRO_LOGGING_CONFIG``, together with
``KEDRO_LOGGING_MODULE_ALLOWLIST=eyecatcher.json_logging`` (``make run LOG_FORMAT=json`` sets
both; docs/configuration.md#logging).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"[, "exception"]}``, one line per record.

    The time is UTC in ISO 8601 with milliseconds; the message is the formatted message (the
    arguments already applied), so a line parses alone, whatever the message contains.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
