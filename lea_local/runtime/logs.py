"""Structured logs: one JSON object per line on stderr. Secrets never reach them: nothing logs
request headers, and request lines name the route template, not the path (an audio name is a
credential). As a last line of defence, a configured API key is masked should one slip in."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from lea_local.settings import MIN_API_KEY_LENGTH

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        # Only whole keys of a refusable length: masking a short one ("k") would mangle every
        # word that contains it. The settings refuse such keys before logging is configured.
        self.secrets = [s for s in (secrets or []) if len(s) >= MIN_API_KEY_LENGTH]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line


def configure_logging(level: str = "INFO", secrets: list[str] | None = None) -> None:
    from lea_local.runtime.observability import RequestIdFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # One request line of our own replaces uvicorn's access log; httpx logs every URL it fetches.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
