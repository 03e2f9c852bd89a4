"""Registry rules: validation of master data and filters, masking of names, queue order,
the public row shapes of 05-17..05-23, and small-number suppression. No I/O here.

Clause map (portal rules, Kazakh text in shared/seed/portal-rules-kk.txt):

- 05-17 organisations: name, address, ownership, kind, vacancies present, group types and their
  number, group languages, group fill, fee.
- 05-18 queue registry (limited to): queue number, applicant's name, child's name, application
  number, filing date, filing time, out-of-turn benefit, first-priority benefit, provided with a
  place.
- 05-19 vacancies: organisation name, ownership, address, age period, language, priority period
  present, priority period start date and time.
- 05-20 release protocol: date the place entered the portal, organisation name, ownership,
  address, group name, group type, age period, language, date the place entered the priority
  period, priority period end date and time.
- 05-21 directions protocol (limited to): number, issue date, issue time, expiry date, expiry
  time, child's name, organisation name, age period, language, type, status.
- 05-22 queue-number lookup (limited to): queue name, queue number, applicant's name, child's
  name, application number, filing date, filing time, status, stop-list entry date, stop-list exit
  date, stop-list reason, queue type, benefit type.
- 05-23 statistics from anonymised data: queues, allocation of places, organisations' activity,
  users' activity, departments' activity, interaction with the infrastructure.

The api.md shape fields of each row are kept as well (ids that link rows, ISO times).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from services.common.contracts import PoisonMessage
from services.common.errors import BadInput, Forbidden

# -- reference values ----------------------------------------------------------------------------

OWNERSHIPS = ("state", "private")
KINDS = ("kindergarten", "nursery", "mini_center", "sanatorium", "special")
LANGUAGES = ("kk", "ru")
GROUP_TYPES = ("general", "special", "sanatorium", "short_stay")
QUEUE_TYPES = ("general", "transfer", "special", "sanatorium")
BENEFIT_TIERS = ("out_of_turn", "first_priority")
# statuses that hold a place in the queue order (they have a queue number)
IN_QUEUE_STATUSES = ("queued", "offered", "stop_listed")
# statuses shown in the public queue registry (withdrawn applications leave it)
PUBLIC_QUEUE_STATUSES = ("queued", "offered", "stop_listed", "provided")
DIRECTION_TYPES = ("priority", "vacancy", "transfer")
DIRECTION_STATUSES = ("issued", "enrolled", "declined", "expired", "revoked")

MASTER_DATA_ROLES = ("officer", "operator", "system")
MIN_BIRTH_YEAR, MAX_BIRTH_YEAR = 1990, 2100
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
SUPPRESS_BELOW = 5

_TIER_RANK = {"out_of_turn": 0, "first_priority": 1}


def queue_type_fits(queue_type: str, group_type: str) -> bool:
    """general and transfer applications fit general groups; special and sanatorium their own."""
    return group_type == ("general" if queue_type in ("general", "transfer") else queue_type)


def fitting_group_type(queue_type: str) -> str:
    return "general" if queue_type in ("general", "transfer") else queue_type


# -- settings ------------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RegistrySettings:
    public_full_names: bool = False
    timezone: str = "Asia/Almaty"
    max_preferred: int = 3

    @classmethod
    def from_settings(cls, kezek: Mapping[str, Any]) -> "RegistrySettings":
        return cls(
            public_full_names=_truthy(kezek.get("PUBLIC_FULL_NAMES", False)),
            timezone=str(kezek.get("TIMEZONE") or "Asia/Almaty"),
            max_preferred=int(kezek.get("MAX_PREFERRED_ORGANIZATIONS", 3)),
        )

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# -- actors --------------------------------------------------------------------------------------


def require_master_data_role(actor: Mapping[str, Any] | None, organization_id: int | None = None,
                             staff_allowed: bool = False) -> None:
    """Officers, operators and the system keep master data; staff only their own groups."""
    role = (actor or {}).get("role") if isinstance(actor, Mapping) else None
    if role in MASTER_DATA_ROLES:
        return
    if staff_allowed and role == "staff" and organization_id is not None:
        try:
            if int(actor.get("organization_id")) == int(organization_id):
                return
        except (TypeError, ValueError):
            pass
    raise Forbidden("only a department officer may change organisations and groups",
                    field="actor")


# -- names ---------------------------------------------------------------------------------------

# Kazakh/Turkic patronymic particles written as a separate word ("Болат ұлы")
_PARTICLES = {"ұлы", "улы", "қызы", "кызы", "оглы", "оғлы", "кизи", "uly", "kyzy", "ogly"}


def mask_name(full_name: str | None, full: bool = False) -> str | None:
    """"Ахметов Арман Болатович" -> "Ахметов А.Б." (surname and initials); ``full`` keeps it."""
    if full_name is None:
        return None
    words = full_name.split()
    if not words:
        return ""
    if full:
        return " ".join(words)
    initials = "".join(
        w[0].upper() + "." for w in words[1:] if w.lower() not in _PARTICLES and w[0].isalpha()
    )
    return words[0] + (" " + initials if initials else "")


# -- queue order ---------------------------------------------------------------------------------


def tier_rank(benefit_tier: str | None) -> int:
    return _TIER_RANK.get(benefit_tier or "", 2)


def order_key(entry: Mapping[str, Any]) -> tuple:
    """The queue order: benefit tier, filing moment, application number."""
    return (tier_rank(entry.get("benefit_tier")), entry["filed_at"], entry["application_number"])


def positions(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Queue numbers for a set of entries (reference implementation of the SQL on read)."""
    by_queue: dict[str, list[Mapping[str, Any]]] = {}
    for e in entries:
        if e["status"] in IN_QUEUE_STATUSES:
            by_queue.setdefault(e["queue_name"], []).append(e)
    result = {}
    for rows in by_queue.values():
        for n, e in enumerate(sorted(rows, key=order_key), start=1):
            result[e["application_number"]] = n
    return result


# -- input parsing -------------------------------------------------------------------------------


def _int(value: Any, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{field} must be a whole number", field=field)
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"-?\d{1,12}", value):
            raise BadInput(f"{field} must be a whole number", field=field)
        value = int(value)
    if not isinstance(value, int):
        raise BadInput(f"{field} must be a whole number", field=field)
    if minimum is not None and value < minimum:
        raise BadInput(f"{field} must be at least {minimum}", field=field)
    if maximum is not None and value > maximum:
        raise BadInput(f"{field} must be at most {maximum}", field=field)
    return value


def _text(value: Any, field: str, max_len: int = 300) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{field} is required", field=field)
    value = " ".join(value.split())
    if len(value) > max_len:
        raise BadInput(f"{field} is longer than {max_len} characters", field=field)
    return value


def clean_district(name: Any) -> str:
    return _text(name, "district", 120)


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadInput(f"{field} must be one of {', '.join(choices)}", field=field)
    return value


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.strip().lower() in ("1", "true", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadInput(f"{field} must be true or false", field=field)


def parse_id(value: Any, field: str) -> int:
    return _int(value, field, minimum=1)


def parse_page(page: Any, page_size: Any) -> tuple[int, int]:
    page = 1 if page is None else _int(page, "page", minimum=1, maximum=10_000_000)
    page_size = (DEFAULT_PAGE_SIZE if page_size is None
                 else _int(page_size, "page_size", minimum=1, maximum=MAX_PAGE_SIZE))
    return page, page_size


ORGANIZATION_FIELDS = ("name", "address", "district", "ownership", "kind", "languages",
                       "monthly_fee_kzt")


def validate_organization(data: Any, partial: bool = False) -> dict[str, Any]:
    """Clean organisation master data; BadInput names the first bad field."""
    if not isinstance(data, Mapping):
        raise BadInput("organisation data must be an object", field="data")
    unknown = sorted(set(data) - set(ORGANIZATION_FIELDS) - {"id"})
    if unknown:
        raise BadInput(f"unknown field {unknown[0]}", field=unknown[0])
    out: dict[str, Any] = {}
    for field in ORGANIZATION_FIELDS:
        if field not in data:
            if partial:
                continue
            if field == "monthly_fee_kzt":
                out[field] = 0
                continue
            raise BadInput(f"{field} is required", field=field)
        value = data[field]
        if field in ("name", "address"):
            out[field] = _text(value, field, 300)
        elif field == "district":
            out[field] = _text(value, field, 120)
        elif field == "ownership":
            out[field] = _choice(value, field, OWNERSHIPS)
        elif field == "kind":
            out[field] = _choice(value, field, KINDS)
        elif field == "languages":
            if not isinstance(value, (list, tuple)) or not value:
                raise BadInput("languages must be a non-empty list of kk, ru", field=field)
            for lang in value:
                _choice(lang, field, LANGUAGES)
            out[field] = [lang for lang in LANGUAGES if lang in value]
        elif field == "monthly_fee_kzt":
            out[field] = 0 if value is None else _int(value, field, 0, 10_000_000)
    if partial and not out:
        raise BadInput("nothing to change", field="data")
    return out


GROUP_FIELDS = ("name", "group_type", "birth_year", "language", "capacity", "enrolled")


def validate_group(data: Any, organization_languages: Iterable[str]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise BadInput("group data must be an object", field="data")
    unknown = sorted(set(data) - set(GROUP_FIELDS) - {"id", "organization_id"})
    if unknown:
        raise BadInput(f"unknown field {unknown[0]}", field=unknown[0])
    for field in ("name", "group_type", "birth_year", "language", "capacity"):
        if data.get(field) is None:
            raise BadInput(f"{field} is required", field=field)
    out = {
        "name": _text(data["name"], "name", 200),
        "group_type": _choice(data["group_type"], "group_type", GROUP_TYPES),
        "birth_year": _int(data["birth_year"], "birth_year", MIN_BIRTH_YEAR, MAX_BIRTH_YEAR),
        "language": _choice(data["language"], "language", LANGUAGES),
        "capacity": _int(data["capacity"], "capacity", 1, 1000),
        "enrolled": _int(data.get("enrolled") or 0, "enrolled", 0, 1000),
    }
    if out["enrolled"] > out["capacity"]:
        raise BadInput("enrolled cannot exceed capacity", field="enrolled")
    if out["language"] not in set(organization_languages):
        raise BadInput("the organisation does not teach in this language", field="language")
    return out


def validate_preferences(organization_ids: Any, birth_year: Any, language: Any, queue_type: Any,
                         max_preferred: int) -> tuple[list[int], int, str, str]:
    field = "preferred_organizations"
    if organization_ids is None:
        organization_ids = []
    if not isinstance(organization_ids, (list, tuple)):
        raise BadInput("preferred organisations must be a list of ids", field=field)
    if len(organization_ids) > max_preferred:
        raise BadInput(f"at most {max_preferred} preferred organisations", field=field)
    ids = []
    for value in organization_ids:
        try:
            ids.append(_int(value, field, minimum=1))
        except BadInput:
            raise BadInput(f"organisation id {value!r} is not valid", field=field) from None
    if len(set(ids)) != len(ids):
        raise BadInput("an organisation is chosen twice", field=field)
    return (ids, _int(birth_year, "birth_year", MIN_BIRTH_YEAR, MAX_BIRTH_YEAR),
            _choice(language, "language", LANGUAGES),
            _choice(queue_type, "queue_type", QUEUE_TYPES))


# -- filters -------------------------------------------------------------------------------------

# keys a transport may pass along that are not filters
_IGNORED_KEYS = {"format", "page", "page_size"}

_COMMON = ("district", "organization_id", "birth_year", "language")
FILTERS: dict[str, tuple[str, ...]] = {
    "organizations": _COMMON + ("ownership", "kind", "has_vacancies", "group_type",
                                "queue_type"),
    "queue": _COMMON + ("queue_type", "status", "benefit_tier", "queue_name", "from", "to"),
    "vacancies": _COMMON + ("ownership", "group_type", "queue_type", "in_priority_period",
                            "from", "to"),
    "releases": _COMMON + ("ownership", "group_type", "from", "to"),
    "directions": _COMMON + ("ownership", "type", "status", "from", "to"),
    "statistics": _COMMON + ("queue_type", "from", "to"),
}
_STATUS_CHOICES = {"queue": PUBLIC_QUEUE_STATUSES, "directions": DIRECTION_STATUSES}


def _moment(value: Any, field: str, tz: ZoneInfo, end: bool) -> dt.datetime:
    """A date (whole local day, inclusive) or an ISO date-time as a bound."""
    if isinstance(value, str):
        value = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                day = dt.date.fromisoformat(value)
                if end:
                    day += dt.timedelta(days=1)
                return dt.datetime.combine(day, dt.time(), tz)
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
            return moment + (dt.timedelta(microseconds=1) if end else dt.timedelta())
        except ValueError:
            pass
    raise BadInput(f"{field} must be a date YYYY-MM-DD or an ISO date-time", field=field)


def parse_filters(registry: str, filters: Any, tz: ZoneInfo) -> dict[str, Any]:
    """Validate a registry's filters; ``from`` and ``to`` become a half-open moment range."""
    if filters is None:
        filters = {}
    if not isinstance(filters, Mapping):
        raise BadInput("filters must be an object", field="filters")
    allowed = FILTERS[registry]
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if key in _IGNORED_KEYS or value is None or value == "":
            continue
        if key == "age_group":  # api.md's name for the age period = the birth year
            key = "birth_year"
        if key not in allowed:
            raise BadInput(f"unknown filter {key}", field=str(key))
        if key == "district":
            out[key] = _text(value, key, 120)
        elif key == "queue_name":
            out[key] = _text(value, key, 300)
        elif key == "organization_id":
            out[key] = _int(value, key, minimum=1)
        elif key == "birth_year":
            out[key] = _int(value, key, MIN_BIRTH_YEAR, MAX_BIRTH_YEAR)
        elif key == "language":
            out[key] = _choice(value, key, LANGUAGES)
        elif key == "ownership":
            out[key] = _choice(value, key, OWNERSHIPS)
        elif key == "kind":
            out[key] = _choice(value, key, KINDS)
        elif key == "group_type":
            out[key] = _choice(value, key, GROUP_TYPES)
        elif key == "queue_type":
            out[key] = _choice(value, key, QUEUE_TYPES)
        elif key == "type":
            out[key] = _choice(value, key, DIRECTION_TYPES)
        elif key == "benefit_tier":
            out[key] = _choice(value, key, BENEFIT_TIERS + ("none",))
        elif key == "status":
            out[key] = _choice(value, key, _STATUS_CHOICES[registry])
        elif key in ("has_vacancies", "in_priority_period"):
            out[key] = _bool(value, key)
        elif key == "from":
            out[key] = _moment(value, key, tz, end=False)
        elif key == "to":
            out[key] = _moment(value, key, tz, end=True)
    if "from" in out and "to" in out and out["from"] >= out["to"]:
        raise BadInput("to must not be before from", field="to")
    return out


# -- public rows ---------------------------------------------------------------------------------


_UTC = dt.timezone.utc


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value.tzinfo is not _UTC:  # psycopg's values are already in UTC: no conversion
        value = value.astimezone(_UTC)
    return value.isoformat()


def local_date(value: dt.datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(tz).date().isoformat()


def local_time(value: dt.datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(tz).strftime("%H:%M:%S")


def _local_date_time(value: dt.datetime | None, tz: ZoneInfo) -> tuple[str | None, str | None]:
    """local_date and local_time of one moment, converted once (the queue page's 50 rows)."""
    if value is None:
        return None, None
    local = value.astimezone(tz)
    return (f"{local.year:04d}-{local.month:02d}-{local.day:02d}",
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}")


def _stop_list(raw: Any) -> dict[str, Any] | None:
    if not raw or not isinstance(raw, Mapping):
        return None
    return {"entered_at": raw.get("entered_at"), "exits_at": raw.get("exits_at"),
            "reason": raw.get("reason")}


def _stop_day(value: Any, tz: ZoneInfo) -> str | None:
    """Stop-list dates are shown as local dates (05-22.9, 05-22.10)."""
    if not value:
        return None
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.date().isoformat()
    return moment.astimezone(tz).date().isoformat()


QUEUE_COLUMNS = [
    "queue_name", "queue_number", "application_number", "filed_date", "filed_time",
    "applicant_name", "child_name", "out_of_turn_benefit", "first_priority_benefit", "provided",
    "status", "queue_type", "benefit_tier", "filed_at",
]
LOOKUP_COLUMNS = [
    "queue_name", "queue_number", "applicant_name", "child_name", "application_number",
    "filed_date", "filed_time", "status", "stop_list_entered_on", "stop_list_exits_on",
    "stop_list_reason", "queue_type", "benefit_tier", "filed_at", "provided",
]


def _queue_common(row: Mapping[str, Any], s: RegistrySettings) -> dict[str, Any]:
    filed_at = row["filed_at"]
    filed_date, filed_time = _local_date_time(filed_at, s.tz)
    status = row["status"]
    return {
        "queue_name": row["queue_name"],
        "queue_number": row.get("queue_number"),
        "applicant_name": mask_name(row["applicant_name"], s.public_full_names),
        "child_name": mask_name(row["child_name"], s.public_full_names),
        "application_number": row["application_number"],
        "filed_at": iso(filed_at),
        "filed_date": filed_date,
        "filed_time": filed_time,
        "status": status,
        "queue_type": row["queue_type"],
        "benefit_tier": row["benefit_tier"],
        "stop_list": _stop_list(row.get("stop_list")),
        "provided": status == "provided",
    }


def queue_row(row: Mapping[str, Any], s: RegistrySettings) -> dict[str, Any]:
    """A queue registry row (05-18 plus the api.md shape)."""
    out = _queue_common(row, s)
    out["out_of_turn_benefit"] = row["benefit_tier"] == "out_of_turn"
    out["first_priority_benefit"] = row["benefit_tier"] == "first_priority"
    return out


def lookup_row(row: Mapping[str, Any], s: RegistrySettings) -> dict[str, Any]:
    """Queue-number information (05-22 plus the api.md shape)."""
    out = _queue_common(row, s)
    stop = out["stop_list"] or {}
    out["stop_list_entered_on"] = _stop_day(stop.get("entered_at"), s.tz)
    out["stop_list_exits_on"] = _stop_day(stop.get("exits_at"), s.tz)
    out["stop_list_reason"] = stop.get("reason")
    return out


GROUP_KEYS = ("id", "name", "group_type", "birth_year", "language", "capacity", "enrolled")

ORGANIZATION_COLUMNS = [
    "id", "name", "address", "district", "ownership", "kind", "has_vacancies", "vacancies",
    "groups_count", "group_types_summary", "group_languages", "capacity", "enrolled",
    "monthly_fee_kzt", "languages",
]


def group_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in GROUP_KEYS}


def organization_view(row: Mapping[str, Any], groups: list[Mapping[str, Any]],
                      vacancies: int) -> dict[str, Any]:
    """An organisation (api.md shape plus the 05-17 fields)."""
    groups = [group_view(g) for g in sorted(groups, key=lambda g: g["id"])]
    types: dict[str, int] = {}
    for g in groups:
        types[g["group_type"]] = types.get(g["group_type"], 0) + 1
    return {
        "id": row["id"],
        "name": row["name"],
        "address": row["address"],
        "district": row["district"],
        "ownership": row["ownership"],
        "kind": row["kind"],
        "languages": list(row["languages"]),
        "monthly_fee_kzt": row["monthly_fee_kzt"],
        "groups": groups,
        "vacancies": int(vacancies),
        "has_vacancies": vacancies > 0,
        "groups_count": len(groups),
        "group_types": dict(sorted(types.items())),
        "group_types_summary": ", ".join(f"{t}: {n}" for t, n in sorted(types.items())),
        "group_languages": [lang for lang in LANGUAGES if any(g["language"] == lang
                                                              for g in groups)],
        "capacity": sum(g["capacity"] for g in groups),
        "enrolled": sum(g["enrolled"] for g in groups),
        "revision": row["revision"],
    }


VACANCY_COLUMNS = [
    "place_id", "organization_id", "organization_name", "ownership", "address", "birth_year",
    "language", "group_type", "in_priority_period", "priority_starts_at", "priority_ends_at",
]


def vacancy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A vacant place (05-19 plus the api.md shape)."""
    return {
        "place_id": row["place_id"],
        "organization_id": row["organization_id"],
        "organization_name": row["organization_name"],
        "ownership": row["ownership"],
        "address": row["address"],
        "district": row["district"],
        "birth_year": row["birth_year"],
        "language": row["language"],
        "group_type": row["group_type"],
        "in_priority_period": row["status"] == "priority",
        "priority_starts_at": iso(row["priority_starts_at"]),
        "priority_ends_at": iso(row["priority_ends_at"]),
    }


RELEASE_COLUMNS = [
    "released_date", "organization_name", "ownership", "address", "group_name", "group_type",
    "birth_year", "language", "priority_start_date", "priority_ends_at", "released_at",
    "priority_starts_at", "place_id", "organization_id", "district",
]


def release_row(row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """A place-release protocol row (05-20)."""
    return {
        "id": row["id"],
        "place_id": row["place_id"],
        "organization_id": row["organization_id"],
        "district": row["district"],
        "released_at": iso(row["released_at"]),
        "released_date": local_date(row["released_at"], tz),
        "organization_name": row["organization_name"],
        "ownership": row["ownership"],
        "address": row["address"],
        "group_name": row["group_name"],
        "group_type": row["group_type"],
        "birth_year": row["birth_year"],
        "language": row["language"],
        "priority_starts_at": iso(row["priority_starts_at"]),
        "priority_start_date": local_date(row["priority_starts_at"], tz),
        "priority_ends_at": iso(row["priority_ends_at"]),
    }


DIRECTION_COLUMNS = [
    "number", "issued_date", "issued_time", "expires_date", "expires_time", "child_name",
    "organization_name", "birth_year", "language", "type", "status", "issued_at", "expires_at",
    "organization_id", "place_id",
]


def direction_row(row: Mapping[str, Any], s: RegistrySettings) -> dict[str, Any]:
    """A directions protocol row (05-21); never the application number (public)."""
    tz = s.tz
    return {
        "number": row["number"],
        "issued_at": iso(row["issued_at"]),
        "issued_date": local_date(row["issued_at"], tz),
        "issued_time": local_time(row["issued_at"], tz),
        "expires_at": iso(row["expires_at"]),
        "expires_date": local_date(row["expires_at"], tz),
        "expires_time": local_time(row["expires_at"], tz),
        "child_name": mask_name(row["child_name"], s.public_full_names),
        "organization_id": row["organization_id"],
        "organization_name": row["organization_name"],
        "birth_year": row["birth_year"],
        "language": row["language"],
        "type": row["type"],
        "status": row["status"],
        "place_id": row["place_id"],
    }


def page_result(items: list[dict[str, Any]], total: int, page: int, page_size: int,
                columns: list[str], republished_at: dt.datetime | None) -> dict[str, Any]:
    return {"items": items, "total": int(total), "page": page, "page_size": page_size,
            "columns": list(columns), "republished_at": iso(republished_at)}


# -- read-model transitions (what an applied snapshot adds to the anonymised statistics) ---------


def entry_facts(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Statistic facts when a queue entry moves from ``old`` (None: first seen) to ``new``."""
    facts = []
    old_status = old["status"] if old else None
    if old is None:
        facts.append("filed")
    if new["status"] != old_status and new["status"] in ("withdrawn", "provided", "stop_listed"):
        facts.append(new["status"])
    if (new.get("benefit_tier") in BENEFIT_TIERS
            and not (old and old.get("benefit_tier") in BENEFIT_TIERS)):
        facts.append("benefit_granted")
    return facts


def direction_facts(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    facts = []
    if old is None:
        facts.append("direction_issued")
    old_status = old["status"] if old else "issued"
    if new["status"] != old_status and new["status"] != "issued":
        facts.append(f"direction_{new['status']}")
    return facts


def enrolled_delta(old_status: str | None, new_status: str) -> int:
    """+1 when a direction becomes enrolled, -1 if an enrolment is ever undone."""
    return int(new_status == "enrolled") - int(old_status == "enrolled")


# -- statistics ----------------------------------------------------------------------------------


def suppressed(count: int | None) -> dict[str, Any]:
    """A figure about children: hidden when it would describe fewer than 5 of them."""
    count = int(count or 0)
    if 0 < count < SUPPRESS_BELOW:
        return {"count": None, "suppressed": True}
    return {"count": count, "suppressed": False}


def plain(count: int | None) -> dict[str, Any]:
    """A figure that describes no child (places, organisations, messages)."""
    return {"count": int(count or 0), "suppressed": False}


# -- incoming snapshots --------------------------------------------------------------------------


def _poison_int(value: Any, name: str, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise PoisonMessage(f"{name} is not a whole number: {value!r}") from None


def clean_entry(data: Mapping[str, Any]) -> dict[str, Any]:
    """A queue_entry_changed snapshot with the types the read model stores."""
    prefs = data.get("preferred_organizations") or []
    return {
        "application_number": str(data["application_number"]),
        "revision": _poison_int(data["revision"], "revision"),
        "queue_name": str(data["queue_name"]),
        "district": str(data["district"]),
        "queue_type": str(data["queue_type"]),
        "birth_year": _poison_int(data["birth_year"], "birth_year"),
        "language": str(data["language"]),
        "status": str(data["status"]),
        # the queue service says "none" for no (verified) benefit; keep one spelling
        "benefit_tier": (data.get("benefit_tier") if data.get("benefit_tier") in BENEFIT_TIERS
                         else "none"),
        "filed_at": data["filed_at"],
        "stop_list": data.get("stop_list") or None,
        "applicant_name": str(data.get("applicant_name") or ""),
        "child_name": str(data.get("child_name") or ""),
        "preferred_organizations": [_poison_int(p, "preferred_organizations") for p in prefs],
    }


def clean_place(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "place_id": data["place_id"],
        "revision": _poison_int(data["revision"], "revision"),
        "status": str(data["status"]),
        "organization_id": _poison_int(data["organization_id"], "organization_id"),
        "group_id": _poison_int(data.get("group_id"), "group_id", required=False),
        "release_id": data.get("release_id"),
        "birth_year": _poison_int(data.get("birth_year"), "birth_year", required=False),
        "language": data.get("language"),
        "group_type": data.get("group_type"),
        "released_at": data.get("released_at"),
        "priority_starts_at": data.get("priority_starts_at"),
        "priority_ends_at": data.get("priority_ends_at"),
        "vacancy_opened_at": data.get("vacancy_opened_at"),
        "direction_number": (None if data.get("direction_number") is None
                             else str(data["direction_number"])),
    }


def clean_direction(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "number": str(data["number"]),
        "revision": _poison_int(data["revision"], "revision"),
        "status": str(data["status"]),
        "type": str(data["type"]),
        "place_id": data.get("place_id"),
        "organization_id": _poison_int(data["organization_id"], "organization_id"),
        "group_id": _poison_int(data.get("group_id"), "group_id", required=False),
        "application_number": (None if data.get("application_number") is None
                               else str(data["application_number"])),
        "child_name": str(data.get("child_name") or ""),
        "birth_year": _poison_int(data.get("birth_year"), "birth_year", required=False),
        "language": data.get("language"),
        "issued_at": data["issued_at"],
        "expires_at": data.get("expires_at"),
        "closed_at": data.get("closed_at"),
        "reason": data.get("reason"),
    }


# -- statistics (05-23) --------------------------------------------------------------------------

HANDLER_EVENTS = {
    "registry.on_queue_entry_changed": ("queue", "queue_entry_changed"),
    "registry.on_place_released": ("allocation", "place_released"),
    "registry.on_place_changed": ("allocation", "place_changed"),
    "registry.on_direction_issued": ("allocation", "direction_issued"),
    "registry.on_direction_changed": ("allocation", "direction_changed"),
    "registry.on_organization_changed": ("registry", "organization_changed"),
}


def _pivot(rows: list[Mapping[str, Any]], keys: tuple[str, ...], kinds: Mapping[str, str],
           cell=suppressed) -> list[dict[str, Any]]:
    """Rows of (kind, *keys, n) -> one dict per keys with a cell per kind."""
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in keys)
        if key not in table:
            table[key] = {k: r[k] for k in keys}
            table[key].update({name: 0 for name in kinds.values()})
        if r["kind"] in kinds:
            table[key][kinds[r["kind"]]] += int(r["n"])
    out = []
    for key in sorted(table, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        row = table[key]
        for name in kinds.values():
            row[name] = cell(row[name])
        for k, v in list(row.items()):
            if isinstance(v, (dt.date, dt.datetime)):
                row[k] = v.isoformat()
        out.append(row)
    return out


def build_statistics(f: Mapping[str, Any], sizes, flows, allocations, org_activity, departments,
                     users, events, names: Mapping[int, str], at) -> dict[str, Any]:
    """Assemble the statistics answer; every figure about children goes through suppressed()."""
    infrastructure: dict[tuple, int] = {}
    for r in events:
        source, event_type = HANDLER_EVENTS.get(r["handler"], (None, r["handler"]))
        key = (r["day"].isoformat(), source, event_type)
        infrastructure[key] = infrastructure.get(key, 0) + int(r["n"])
    organizations = _pivot(org_activity, ("organization_id",),
                           {"place_released": "releases", "direction_enrolled": "enrolments"})
    # releases count places, not children: they are not suppressed
    releases = {r["organization_id"]: int(r["n"]) for r in org_activity
                if r["kind"] == "place_released"}
    for row in organizations:
        row["organization_name"] = names.get(row["organization_id"])
        row["releases"] = plain(releases.get(row["organization_id"], 0))
    departments_rows = _pivot(departments, ("day",), {
        "benefit_granted": "benefits_granted", "stop_listed": "stop_listed",
        "direction_revoked": "directions_revoked", "master_data_changed": "master_data_changes"})
    master = {r["day"].isoformat(): int(r["n"]) for r in departments
              if r["kind"] == "master_data_changed"}
    for row in departments_rows:
        row["master_data_changes"] = plain(master.get(row["day"], 0))  # not about children
    return {
        "filters": {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                    for k, v in f.items()},
        "suppress_below": SUPPRESS_BELOW,
        "queues": [
            {"queue_name": r["queue_name"], "district": r["district"],
             "queue_type": r["queue_type"], "birth_year": r["birth_year"],
             "children": suppressed(r["n"]), "with_benefit": suppressed(r["with_benefit"])}
            for r in sizes
        ],
        "flows": _pivot(flows, ("day",), {"filed": "filed", "withdrawn": "withdrawn",
                                          "provided": "provided"}),
        "allocations": _pivot(allocations, ("day", "direction_type"), {
            "direction_issued": "issued", "direction_enrolled": "enrolled",
            "direction_declined": "declined", "direction_expired": "expired",
            "direction_revoked": "revoked"}),
        "organizations": organizations,
        "users": _pivot(users, ("day",), {"filed": "applications_filed",
                                          "withdrawn": "applications_withdrawn",
                                          "direction_declined": "directions_declined"}),
        "departments": departments_rows,
        "infrastructure": [
            {"day": day, "source": source, "event_type": event_type, "events": plain(n)}
            for (day, source, event_type), n in sorted(infrastructure.items(),
                                                       key=lambda kv: tuple(map(str, kv[0])))
        ],
        "republished_at": iso(at),
    }
