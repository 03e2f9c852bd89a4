"""Rules of the audit log, free of I/O: what a valid record is, what a query may ask, and what
the latest checkpoint says about the chain.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from services.common.contracts import AUDIT_FIELDS, PoisonMessage
from services.common.errors import BadInput

# the stored columns are exactly the contract's fields
RECORD_FIELDS: tuple[str, ...] = AUDIT_FIELDS
# envelope keys contracts.audit_record adds; accepted and not stored
ENVELOPE_KEYS = frozenset({"event_type", "event_id"})
# a value longer than this is cut: one oversized header must not make a request unloggable
MAX_VALUE_CHARS = 2000

# filter name -> column compared for equality (api.md GET /api/v1/audit)
EQUALITY_FILTERS: tuple[str, ...] = (
    "actor", "role", "action", "target", "ip", "fingerprint", "outcome", "request_id",
)
TIME_FILTERS: tuple[str, ...] = ("from", "to")
MAX_PAGE_SIZE = 500


class InvalidRecord(PoisonMessage):
    """A message on the audit queue that can never be stored (it goes to the DLQ)."""


def decode(body: bytes | str | dict) -> Any:
    """The JSON value of a message body."""
    if isinstance(body, (dict, list)):
        return body
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRecord(f"body is not JSON: {exc}") from exc


def _text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = str(value)
    elif isinstance(value, list) and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        value = ", ".join(str(v) for v in value)  # e.g. forwarded_for as a list of hops
    elif not isinstance(value, str):
        raise InvalidRecord(f"{field} is a {type(value).__name__}, not text")
    if "\x00" in value:
        raise InvalidRecord(f"{field} contains a NUL character")  # PostgreSQL text refuses it
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from JSON "\ud800"
        raise InvalidRecord(f"{field} is not valid Unicode") from exc
    return value[:MAX_VALUE_CHARS]


def normalize_record(payload: Any) -> dict[str, str | None]:
    """The storable form of an audit record (contracts.audit_record); raises InvalidRecord."""
    if not isinstance(payload, dict):
        raise InvalidRecord("record is not an object")
    if payload.get("event_type", "audit_record") != "audit_record":
        raise InvalidRecord(f"event_type {payload.get('event_type')!r} is not audit_record")
    unknown = set(payload) - set(RECORD_FIELDS) - ENVELOPE_KEYS
    if unknown:
        raise InvalidRecord(f"unknown fields {sorted(unknown)}")
    try:
        record_id = str(uuid.UUID(str(payload.get("id"))))
    except ValueError as exc:
        raise InvalidRecord("id is not a uuid") from exc
    record: dict[str, str | None] = {"id": record_id}
    for field in RECORD_FIELDS:
        if field != "id":
            record[field] = _text(field, payload.get(field))
    if not record["action"]:
        raise InvalidRecord("action is missing")
    return record


def parse_time(field: str, value: Any, tz: str) -> dt.datetime:
    """An ISO date or datetime; without an offset it is local time in ``tz``."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise BadInput(f"{field} must be an ISO date or datetime, e.g. "
                           "2027-01-31T09:00:00+05:00", field) from exc
    else:
        raise BadInput(f"{field} must be an ISO date or datetime", field)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed


def parse_filters(filters: dict[str, Any] | None, tz: str = "Asia/Almaty") -> dict[str, Any]:
    """Validated filters: equality values as text, ``from``/``to`` as aware datetimes.

    An unknown filter is refused rather than ignored: an auditor must never believe a
    filter was applied when it was not.
    """
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise BadInput("filters must be an object", "filters")
    parsed: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None or value == "":
            continue
        if key in EQUALITY_FILTERS:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise BadInput(f"{key} must be text", key)
            parsed[key] = str(value)
        elif key in TIME_FILTERS:
            parsed[key] = parse_time(key, value, tz)
        else:
            raise BadInput(f"unknown filter {key!r}", str(key))
    if "from" in parsed and "to" in parsed and parsed["from"] > parsed["to"]:
        raise BadInput("from is later than to", "from")
    return parsed


def check_page(page: Any, page_size: Any) -> tuple[int, int]:
    """(page, page_size) as ints: page from 1, page_size 1..500."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise BadInput("page must be a whole number from 1", "page")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not (
            1 <= page_size <= MAX_PAGE_SIZE):
        raise BadInput(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}",
                       "page_size")
    return page, page_size


def check_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{field} is required", field)
    return value


def checkpoint_problem(checkpoint: dict[str, Any] | None, last_seq: int,
                       hash_at_checkpoint: str | None) -> dict[str, Any] | None:
    """Compare an intact-looking chain with the latest checkpoint.

    The chain alone cannot notice its newest records being deleted; the checkpoint (also
    published outside the database) remembers how many records there were and the head hash.
    Returns ``{"seq", "problem"}`` for the first record that contradicts it, or None.
    """
    if checkpoint is None:
        return None
    records = int(checkpoint["records"])
    if last_seq < records:
        return {"seq": last_seq + 1,
                "problem": f"record(s) after seq {last_seq} missing "
                           f"(checkpoint counted {records})"}
    if records > 0 and hash_at_checkpoint != checkpoint["head"]:
        return {"seq": records, "problem": "differs from the checkpoint head"}
    return None


def retention_days(value: Any) -> int | None:
    """The AUDIT_RETENTION_DAYS setting: None keeps records forever."""
    if value is None or value == "" or str(value).lower() in ("null", "none"):
        return None
    try:
        days = int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"AUDIT_RETENTION_DAYS must be a whole number or null, not {value!r}") \
            from exc
    if days < 1:
        raise ValueError("AUDIT_RETENTION_DAYS must be at least 1 (or null: keep forever)")
    return days
