"""Logs as JSON objects, one per line: `coulisse serve --json-output`, text-embeddings-inference's flag.

TEI's JSON logs are tracing's records with their fields flattened (router/src/logging.rs); a log pipeline that
parses them (Loki, Elasticsearch, Datadog, Cloud Logging) reads these under the same keys:

    {"timestamp": "2026-12-07T20:41:05.123456Z", "level": "INFO", "message": "POST /embed 200 12.4 ms id=...",
     "target": "coulisse.access", "filename": "access_log.py", "line_number": 62, "method": "POST",
     "path": "/embed", "status": 200, "duration_ms": 12.4, "request_id": "...", "peer": "127.0.0.1:51234",
     "tokenization_ms": 1, "queue_ms": 0, "inference_ms": 10}

`level` is tracing's name (WARNING is "WARN"; CRITICAL, which tracing lacks, "ERROR"). A record's own fields
(logging's `extra`: the access line's method, path, status...) are keys of the object; a traceback is
`exception`. Every string is JSON-escaped, so no message, path or header can forge a second line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# What every LogRecord carries; anything else on a record came from `extra` and is written as a field, except
# uvicorn's `color_message` (its message again, with terminal colours).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                       "taskName", "color_message"}
_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, under TEI's keys (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": _LEVELS.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            "target": record.name,
            "filename": record.filename,
            "line_number": record.lineno,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_logs() -> logging.Handler:
    """Every record as JSON on stderr, from here on: the root logger's handlers format with JsonFormatter (one on
    stderr is added where there is none), Python's warnings are logged (`py.warnings`) rather than printed, and
    huggingface_hub's download bars, lines of text, are off. Returns the handler that writes them."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        pass
    else:
        disable_progress_bars()
    return root.handlers[0]


def say(logger: logging.Logger, message: str, **fields) -> None:
    """`message` at INFO whatever the logger's level lets through: a line the command prints at every verbosity
    (which model a server answers with), as a record, so that it is JSON with the rest."""
    path, number, function, _ = logger.findCaller(stacklevel=2)
    logger.handle(logger.makeRecord(logger.name, logging.INFO, path, number, message, (), None, function, fields))
