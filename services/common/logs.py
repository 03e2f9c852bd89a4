"""Structured JSON logs, one object a line, with the request id when one is known.

The request id is the gateway's (its ``X-Request-Id`` answer header). It travels to services
as nameko context data (``nameko.request_id`` headers on RPC calls, and on events from the
outbox relay, which reads it from the envelope); ``Metrics.worker_setup`` puts it in
:data:`request_id_var` for every log line the worker writes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kezek_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        # structured fields: log.info("...", extra={"fields": {"method": "enqueue"}})
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
