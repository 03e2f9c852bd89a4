"""Sending one-time codes. The sender is a class named by the setting ``SMS_SENDER``
("module:Class"); it is built with the settings block and offers ``send_code(phone, code)``.

Development and tests use :class:`FileSmsSender`, which appends ``{"phone", "code", "sent_at"}``
JSON lines to the file ``SMS_OUTBOX`` (relative to the project folder). A real SMS provider is
one more class with the same method.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
from typing import Any, Protocol

from nameko.extensions import DependencyProvider

from services.common.config import settings
from services.gateway.abuse import resolve_path

DEFAULT_SENDER = "services.gateway.sms:FileSmsSender"


class SmsSender(Protocol):
    def send_code(self, phone: str, code: str) -> None: ...


class FileSmsSender:
    """Appends each code as a JSON line to a file: the development 'SMS gateway'."""

    def __init__(self, settings_block: dict[str, Any]):
        self.path = resolve_path(str(settings_block.get("SMS_OUTBOX") or "var/sms-outbox.jsonl"))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def send_code(self, phone: str, code: str) -> None:
        line = json.dumps(
            {"phone": phone, "code": code, "sent_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        )
        # one write() of one line on an O_APPEND descriptor: concurrent senders never interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def load_sender(settings_block: dict[str, Any]) -> SmsSender:
    spec = str(settings_block.get("SMS_SENDER") or DEFAULT_SENDER)
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(settings_block)


class Sms(DependencyProvider):
    """``sms = Sms()``: the configured sender."""

    def setup(self) -> None:
        self.sender = load_sender(settings(self.container.config))

    def get_dependency(self, worker_ctx) -> SmsSender:
        return self.sender
