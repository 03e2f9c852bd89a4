"""Queue rules (domain.md "Applications and the queue", "Places, priority period"): no I/O.

Queue order is (tier rank, filing moment, application number). A benefit counts only once an
officer has verified it; the filing moment never changes, so a child who leaves the stop-list
comes back to the same place in the order.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

QUEUE_TYPES = ("general", "transfer", "special", "sanatorium")
STATUSES = ("queued", "offered", "provided", "stop_listed", "withdrawn")
# still in the queue and counted in queue numbers (a stop-listed child keeps its place)
IN_QUEUE = ("queued", "offered", "stop_listed")

TIER_RANK = {"out_of_turn": 0, "first_priority": 1, "none": 2}

# which group type a queue type fits (api.md "New application")
GROUP_KIND = {"general": "general", "transfer": "general", "special": "special",
              "sanatorium": "sanatorium"}

# reasons an officer may put an application on the stop-list with (05-22.9..11)
OFFICER_STOP_REASONS = ("postponed", "direction_declined", "direction_expired", "documents_check")
# reasons the applicant may leave the stop-list from by themselves
RESUMABLE_REASONS = ("postponed", "direction_declined", "direction_expired", "direction_revoked")
# direction status -> stop-list reason (allocation.direction_changed)
DIRECTION_STOP_REASONS = {"declined": "direction_declined", "expired": "direction_expired",
                          "revoked": "direction_revoked"}


def queue_name(district: str, queue_type: str, birth_year: int) -> str:
    return f"{district}/{queue_type}/{birth_year}"


def effective_tier(claimed_tier: str | None, verified: bool) -> str:
    """The tier that orders the queue: the claimed one only once verified."""
    if verified and claimed_tier in TIER_RANK:
        return claimed_tier
    return "none"


def tier_rank(claimed_tier: str | None, verified: bool) -> int:
    return TIER_RANK[effective_tier(claimed_tier, verified)]


def order_key(entry: dict[str, Any]) -> tuple:
    """Sort key of an entry: tier rank, filing moment, application number."""
    return (tier_rank(entry.get("claimed_tier"), bool(entry.get("benefit_verified"))),
            entry["filed_at"], entry["application_number"])


def queue_number(entry: dict[str, Any], others: list[dict[str, Any]]) -> int | None:
    """1 + entries of the same queue still in it that stand before ``entry`` (None if it left)."""
    if entry["status"] not in IN_QUEUE:
        return None
    key = order_key(entry)
    return 1 + sum(
        1 for o in others
        if o["application_number"] != entry["application_number"]
        and o["queue_name"] == entry["queue_name"] and o["status"] in IN_QUEUE
        and order_key(o) < key
    )


def group_kind(queue_type: str) -> str:
    return GROUP_KIND[queue_type]


def fit_reason(entry: dict[str, Any], place: dict[str, Any],
               require_preferred: bool) -> str:
    """Why ``entry`` does not fit ``place``, or ``"ok"``.

    Reasons, checked in this order: ``withdrawn``, ``provided``, ``offered``, ``stop_listed``
    (status), ``birth_year``, ``language``, ``group_type``, ``not_preferred`` (only in the
    priority period, when the child must have chosen the organisation).
    """
    if entry["status"] != "queued":
        return entry["status"]
    if int(entry["birth_year"]) != int(place["birth_year"]):
        return "birth_year"
    if entry["language"] != place["language"]:
        return "language"
    if GROUP_KIND.get(entry["queue_type"]) != place["group_type"]:
        return "group_type"
    if require_preferred and int(place["organization_id"]) not in [
            int(o) for o in entry.get("preferred_organizations") or []]:
        return "not_preferred"
    return "ok"


def can_postpone(status: str) -> bool:
    return status == "queued"


def can_resume(status: str, stop_reason: str | None) -> bool:
    return status == "stop_listed" and stop_reason in RESUMABLE_REASONS


def can_enter_stop_list(status: str) -> bool:
    # an offered child has a direction out: it is declined, expires or is revoked instead
    return status == "queued"


def parse_until(value: Any, timezone: str = "Asia/Almaty") -> dt.datetime | None:
    """An exit moment from an ISO date (midnight, local time) or date-time (offset required).

    Returns None for None/""; raises ValueError (TypeError) for a string (other value) it
    cannot read.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    if len(value) == 10:
        day = dt.date.fromisoformat(value)
        return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(timezone))
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a time needs an offset")
    return moment


def snapshot(entry: dict[str, Any]) -> dict[str, Any]:
    """The queue.queue_entry_changed payload (contracts.ENTRY_FIELDS) of an entry row."""
    return {
        "application_number": entry["application_number"],
        "revision": entry["revision"],
        "queue_name": entry["queue_name"],
        "district": entry["district"],
        "queue_type": entry["queue_type"],
        "birth_year": entry["birth_year"],
        "language": entry["language"],
        "status": entry["status"],
        "benefit_tier": effective_tier(entry.get("claimed_tier"),
                                       bool(entry.get("benefit_verified"))),
        "filed_at": iso(entry["filed_at"]),
        "stop_list": stop_list(entry),
        "applicant_name": entry.get("applicant_name"),
        "child_name": entry.get("child_name"),
        "preferred_organizations": [int(o) for o in entry.get("preferred_organizations") or []],
    }


def stop_list(entry: dict[str, Any]) -> dict[str, Any] | None:
    if entry["status"] != "stop_listed":
        return None
    return {"entered_at": iso(entry.get("stop_entered_at")),
            "exits_at": iso(entry.get("stop_exits_at")),
            "reason": entry.get("stop_reason")}


def iso(value: Any) -> str | None:
    """ISO 8601 in UTC with offset."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value)
