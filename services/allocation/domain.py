"""Allocation rules: who may do what, free capacity, priority periods, claim pools, directions
and the working-day calendar. Pure functions and values: no I/O, no Nameko, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from services.common.errors import BadInput, Conflict, Forbidden, Unauthorized

MAX_PLACES_PER_RELEASE = 50

# place life cycle: priority (priority period) -> directed (a direction is out) -> filled
# (enrolled); priority -> vacancy (public) -> directed; a closed direction sends it back to priority
PLACE_PRIORITY, PLACE_DIRECTED, PLACE_VACANCY, PLACE_FILLED = (
    "priority", "directed", "vacancy", "filled")
OPEN_PLACE_STATUSES = (PLACE_PRIORITY, PLACE_DIRECTED, PLACE_VACANCY)

ISSUED, ENROLLED, DECLINED, EXPIRED, REVOKED = (
    "issued", "enrolled", "declined", "expired", "revoked")
# a closed direction returns its place to release and its application to the stop-list
RELEASING_STATUSES = (DECLINED, EXPIRED, REVOKED)

DIRECTION_PREFIX = "D"


# -- settings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkingCalendar:
    """Working days: Monday to Friday, less listed non-working days, plus listed working
    weekend days (a government decree may move a day off)."""

    days_off: frozenset[dt.date] = frozenset()
    working_days: frozenset[dt.date] = frozenset()

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]]) -> "WorkingCalendar":
        """Rows of the holidays file: ``date`` (YYYY-MM-DD) and ``kind`` (holiday, observed,
        day_off or working_day)."""
        off, working = set(), set()
        for row in rows:
            day = dt.date.fromisoformat(row["date"].strip())
            kind = (row.get("kind") or "holiday").strip()
            if kind == "working_day":
                working.add(day)
            elif kind in ("holiday", "observed", "day_off"):
                off.add(day)
            else:
                raise ValueError(f"unknown calendar kind {kind!r} on {day}")
        return cls(frozenset(off), frozenset(working))

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.working_days:
            return True
        return day.weekday() < 5 and day not in self.days_off

    def add_working_days(self, moment: dt.datetime, days: int, tz: dt.tzinfo) -> dt.datetime:
        """``moment`` plus ``days`` working days at the same local time of day.

        Counting starts the day after ``moment``: issued on Friday 15:00 with 5 days (and no
        holidays) expires the next Friday at 15:00. The result is in UTC.
        """
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        local = moment.astimezone(tz)
        day, left = local.date(), days
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        wall = dt.datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=tz)
        return wall.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Rules:
    """The configurable numbers of domain.md (config.yaml KEZEK block)."""

    priority_period: dt.timedelta = dt.timedelta(hours=24)
    claim_pool: dt.timedelta = dt.timedelta(minutes=10)
    direction_valid_working_days: int = 5
    timezone: dt.tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Almaty"))
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)

    @classmethod
    def from_settings(cls, s: Mapping[str, Any], calendar: WorkingCalendar) -> "Rules":
        return cls(
            priority_period=dt.timedelta(hours=float(s.get("PRIORITY_PERIOD_HOURS", 24))),
            claim_pool=dt.timedelta(minutes=float(s.get("CLAIM_POOL_MINUTES", 10))),
            direction_valid_working_days=int(s.get("DIRECTION_VALID_WORKING_DAYS", 5)),
            timezone=ZoneInfo(str(s.get("TIMEZONE", "Asia/Almaty"))),
            calendar=calendar,
        )

    def priority_period_from(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        return now, now + self.priority_period

    def direction_expiry(self, issued_at: dt.datetime) -> dt.datetime:
        return self.calendar.add_working_days(
            issued_at, self.direction_valid_working_days, self.timezone)

    def pool_closes_at(self, vacancy_opened_at: dt.datetime) -> dt.datetime:
        return vacancy_opened_at + self.claim_pool

    def in_claim_pool(self, vacancy_opened_at: dt.datetime, now: dt.datetime) -> bool:
        """Claims made before the pool window closes are pooled; later ones are first-come."""
        return now < self.pool_closes_at(vacancy_opened_at)


# -- actors ------------------------------------------------------------------------------------

def _actor(actor: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not actor or not actor.get("role"):
        raise Unauthorized("sign in first", field="actor")
    return actor


def _org_id(actor: Mapping[str, Any]) -> int | None:
    try:
        return int(actor["organization_id"]) if actor.get("organization_id") is not None else None
    except (TypeError, ValueError):
        return None


def require_releaser(actor: Mapping[str, Any] | None, organization_id: int) -> None:
    """Staff release places of their own organisation; officers and the system of any."""
    actor = _actor(actor)
    role = actor["role"]
    if role in ("officer", "system"):
        return
    if role == "staff" and _org_id(actor) == organization_id:
        return
    raise Forbidden("only the organisation's staff may release its places", field="organization_id")


def require_enroller(actor: Mapping[str, Any] | None, organization_id: int) -> None:
    actor = _actor(actor)
    if actor["role"] == "staff" and _org_id(actor) == organization_id:
        return
    raise Forbidden("only the organisation's staff may enrol a child", field="direction_number")


def require_applicant(actor: Mapping[str, Any] | None) -> str:
    actor = _actor(actor)
    if actor["role"] != "applicant" or not actor.get("id"):
        raise Forbidden("only an applicant may do this", field="actor")
    return str(actor["id"])


def require_direction_holder(actor: Mapping[str, Any] | None, applicant_id: str | None) -> None:
    actor_id = require_applicant(actor)
    if not applicant_id or actor_id != applicant_id:
        raise Forbidden("this direction is not yours", field="direction_number")


def require_officer(actor: Mapping[str, Any] | None) -> None:
    actor = _actor(actor)
    if actor["role"] != "officer":
        raise Forbidden("only a department officer may revoke a direction",
                        field="direction_number")


# -- input -------------------------------------------------------------------------------------

def parse_places(places: Any) -> int:
    if isinstance(places, bool) or not isinstance(places, int):
        if isinstance(places, str) and places.strip().isdigit():
            places = int(places.strip())
        else:
            raise BadInput("places must be a whole number", field="places")
    if not 1 <= places <= MAX_PLACES_PER_RELEASE:
        raise BadInput(f"places must be between 1 and {MAX_PLACES_PER_RELEASE}", field="places")
    return places


def parse_id(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{field_name} must be a number", field=field_name)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{field_name} must be a number", field=field_name) from None
    if number <= 0 or number >= 2**63:
        raise BadInput(f"{field_name} must be a positive number", field=field_name)
    return number


def parse_text(value: Any, field_name: str, max_length: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{field_name} is required", field=field_name)
    value = value.strip()
    if len(value) > max_length:
        raise BadInput(f"{field_name} is too long", field=field_name)
    return value


# -- capacity and places -----------------------------------------------------------------------

def free_capacity(capacity: int, enrolled: int, open_places: int) -> int:
    """Seats that may still be released: not occupied and not already released."""
    return max(int(capacity) - int(enrolled) - int(open_places), 0)


def queue_place(place: Mapping[str, Any]) -> dict[str, Any]:
    """The ``place`` argument of the queue's RPC methods (docs/rpc.md)."""
    return {
        "place_id": str(place["place_id"]),
        "organization_id": place["organization_id"],
        "group_id": place["group_id"],
        "birth_year": place["birth_year"],
        "language": place["language"],
        "group_type": place["group_type"],
        "in_priority_period": place["status"] == PLACE_PRIORITY,
    }


# -- directions --------------------------------------------------------------------------------

def direction_number(sequence_value: int) -> str:
    return f"{DIRECTION_PREFIX}{sequence_value:09d}"


def direction_type(entry: Mapping[str, Any], by_claim: bool) -> str:
    """transfer for a transfer-queue child, else vacancy (claimed) or priority (allocated)."""
    if entry.get("queue_type") == "transfer":
        return "transfer"
    return "vacancy" if by_claim else "priority"


def require_open(direction: Mapping[str, Any], action: str) -> None:
    if direction["status"] != ISSUED:
        raise Conflict(f"cannot {action} a direction that is {direction['status']}",
                       field="direction_number", code="DIRECTION_NOT_OPEN")


def fit_verdict(fit: Any) -> tuple[bool, str | None, str | None]:
    """Read queue.check_fit's answer: (fits, reason, applicant_id)."""
    if fit is None:
        return False, "the application was not found in the queue", None
    if isinstance(fit, bool):
        return fit, None if fit else "the child does not fit this place", None
    fits = bool(fit.get("fits", fit.get("ok", False)))
    reason = fit.get("reason") or (None if fits else "the child does not fit this place")
    applicant_id = fit.get("applicant_id")
    return fits, reason, (str(applicant_id) if applicant_id else None)


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat()


def parse_place_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        raise BadInput("place_id is not a place id", field="place_id") from None


# -- snapshots (event payloads and RPC results) -------------------------------------------------

def place_snapshot(place: Mapping[str, Any]) -> dict[str, Any]:
    """The place_released / place_changed payload: contracts.PLACE_FIELDS plus the group and
    organisation details the public registries show."""
    return {
        "place_id": str(place["place_id"]),
        "revision": place["revision"],
        "status": place["status"],
        "organization_id": place["organization_id"],
        "group_id": place["group_id"],
        "release_id": place["release_id"],
        "birth_year": place["birth_year"],
        "language": place["language"],
        "group_type": place["group_type"],
        "released_at": iso(place["released_at"]),
        "priority_starts_at": iso(place["priority_starts_at"]),
        "priority_ends_at": iso(place["priority_ends_at"]),
        "vacancy_opened_at": iso(place["vacancy_opened_at"]),
        "direction_number": place["direction_number"],
        "in_priority_period": place["status"] == PLACE_PRIORITY,
        "organization_name": place.get("organization_name"),
        "district": place.get("district"),
        "ownership": place.get("ownership"),
        "address": place.get("address"),
        "group_name": place.get("group_name"),
    }


def direction_snapshot(direction: Mapping[str, Any]) -> dict[str, Any]:
    """The direction_issued / direction_changed payload and the RPC result (api.md shape)."""
    return {
        "number": direction["number"],
        "revision": direction["revision"],
        "status": direction["status"],
        "type": direction["type"],
        "place_id": str(direction["place_id"]),
        "organization_id": direction["organization_id"],
        "organization_name": direction.get("organization_name"),
        "group_id": direction["group_id"],
        "application_number": direction["application_number"],
        "child_name": direction.get("child_name"),
        "birth_year": direction["birth_year"],
        "language": direction["language"],
        "issued_at": iso(direction["issued_at"]),
        "expires_at": iso(direction["expires_at"]),
        "closed_at": iso(direction["closed_at"]),
        "reason": direction.get("reason"),
    }
