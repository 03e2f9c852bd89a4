"""Event contracts: every event any service publishes, with its version and payload fields.

An event on the wire is an envelope::

    {"event_id": uuid, "event_type": "direction_issued", "version": 1, "source": "allocation",
     "occurred_at": iso-time, "request_id": str|None, "data": {...}}

Snapshot events (``*_changed``, ``direction_*``, ``place_*``) carry the whole current state of
one thing plus a ``revision`` that grows by one with every change, so a read model applies an
event only if its revision is newer: redelivery and reordering change nothing.

Handlers call :func:`parse`, which raises :class:`PoisonMessage` for an envelope it cannot
understand (the message goes straight to the dead-letter queue).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any


class PoisonMessage(Exception):
    """A message that can never be handled: malformed, unknown type or version."""


@dataclass(frozen=True)
class Contract:
    source: str
    event_type: str
    version: int
    fields: frozenset[str]


def _c(source: str, event_type: str, version: int, *fields: str) -> Contract:
    return Contract(source, event_type, version, frozenset(fields))


DIRECTION_FIELDS = (
    "number", "revision", "status", "type", "place_id", "organization_id", "group_id",
    "application_number", "child_name", "birth_year", "language", "issued_at", "expires_at",
    "closed_at", "reason",
)
PLACE_FIELDS = (
    "place_id", "revision", "status", "organization_id", "group_id", "release_id", "birth_year",
    "language", "group_type", "released_at", "priority_starts_at", "priority_ends_at",
    "vacancy_opened_at", "direction_number",
)
ENTRY_FIELDS = (
    "application_number", "revision", "queue_name", "district", "queue_type", "birth_year",
    "language", "status", "benefit_tier", "filed_at", "stop_list", "applicant_name",
    "child_name", "preferred_organizations",
)

CONTRACTS: dict[tuple[str, str], Contract] = {
    (c.source, c.event_type): c
    for c in [
        # applications
        _c("applications", "application_filed", 1, "application_number", "applicant_name",
           "child_name", "child_birth_date", "birth_year", "queue_type", "language", "district",
           "preferred_organizations", "desired_start", "filed_at", "benefit",
           "current_organization_id", "current_group_id", "applicant_id"),
        _c("applications", "application_withdrawn", 1, "application_number", "withdrawn_at"),
        _c("applications", "benefit_verified", 1, "application_number", "approved", "tier",
           "category", "note"),
        # queue
        _c("queue", "queue_entry_changed", 1, *ENTRY_FIELDS),
        # allocation
        _c("allocation", "place_released", 1, *PLACE_FIELDS),
        _c("allocation", "place_changed", 1, *PLACE_FIELDS),
        _c("allocation", "direction_issued", 1, *DIRECTION_FIELDS),
        _c("allocation", "direction_changed", 1, *DIRECTION_FIELDS),
        # registry
        _c("registry", "organization_changed", 1, "organization_id", "revision", "organization"),
        # audit
        _c("audit", "audit_checkpoint", 1, "records", "head", "at"),
    ]
}


def _current_request_id() -> str | None:
    from services.common.logs import request_id_var

    return request_id_var.get()


def envelope(source: str, event_type: str, data: dict[str, Any],
             request_id: str | None = None) -> dict[str, Any]:
    """Build an event envelope, checking the payload against its contract."""
    contract = CONTRACTS.get((source, event_type))
    if contract is None:
        raise ValueError(f"no contract for {source}.{event_type}")
    missing = contract.fields - data.keys()
    if missing:
        raise ValueError(f"{source}.{event_type} misses {sorted(missing)}")
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "version": contract.version,
        "source": source,
        "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        # by default the request being handled (the worker's, see services.common.logs)
        "request_id": request_id if request_id is not None else _current_request_id(),
        "data": data,
    }


def parse(payload: Any, source: str, event_type: str) -> dict[str, Any]:
    """Validate an incoming envelope; return its data. Raises PoisonMessage."""
    if not isinstance(payload, dict):
        raise PoisonMessage("payload is not an object")
    for key in ("event_id", "event_type", "version", "data"):
        if key not in payload:
            raise PoisonMessage(f"envelope lacks {key}")
    contract = CONTRACTS.get((source, event_type))
    if contract is None or payload["event_type"] != event_type:
        raise PoisonMessage(f"unknown event type {payload.get('event_type')!r}")
    if payload["version"] != contract.version:
        raise PoisonMessage(f"unknown version {payload['version']!r} of {event_type}")
    try:
        uuid.UUID(str(payload["event_id"]))
    except ValueError as exc:
        raise PoisonMessage("event_id is not a uuid") from exc
    data = payload["data"]
    if not isinstance(data, dict):
        raise PoisonMessage("data is not an object")
    missing = contract.fields - data.keys()
    if missing:
        raise PoisonMessage(f"data lacks {sorted(missing)}")
    return data


def batch_values(payloads: list[Any], field: str) -> list[str]:
    """The string values of ``data[field]`` across a batch of event payloads, for a handler
    that reads their rows together; malformed payloads are skipped (parse refuses them)."""
    values = []
    for payload in payloads:
        data = payload.get("data") if isinstance(payload, dict) else None
        value = data.get(field) if isinstance(data, dict) else None
        if isinstance(value, str):
            values.append(value)
    return values


AUDIT_FIELDS = (
    "id", "request_id", "actor", "role", "action", "target", "outcome", "ip", "forwarded_for",
    "user_agent", "accept_language", "fingerprint", "server_fingerprint", "body_digest",
    "service",
)


def audit_record(**fields: Any) -> dict[str, Any]:
    """An audit record as published to the audit queue. Unknown keys are refused."""
    unknown = set(fields) - set(AUDIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown audit fields {sorted(unknown)}")
    record = {k: fields.get(k) for k in AUDIT_FIELDS}
    record["id"] = record["id"] or str(uuid.uuid4())
    record["event_type"] = "audit_record"
    record["event_id"] = record["id"]
    return record


def system_audit(service: str, action: str, target: str, outcome: str = "ok",
                 request_id: str | None = None) -> dict[str, Any]:
    """Arguments for Tx.audit() describing an automatic action by the system."""
    return {"actor": "system", "role": "system", "action": action, "target": target,
            "outcome": outcome, "request_id": request_id, "service": service}
