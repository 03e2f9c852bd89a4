"""Rules for applications (domain.md "Applications and the queue"): pure, no I/O.

- :func:`check_iin` validates an IIN (12 digits, YYMMDD, century/sex digit, check digit) and
  :func:`make_iin` builds valid ones for tests and the demo loader;
- :func:`validate_new_application` turns the api.md "New application" JSON into a
  :class:`NewApplication` or raises ``BadInput`` / ``RuleRefused`` naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Mapping

from services.common.errors import BadInput, Conflict, Forbidden, RuleRefused, Unauthorized

QUEUE_TYPES = ("general", "transfer", "special", "sanatorium")
LANGUAGES = ("kk", "ru")
TIERS = ("out_of_turn", "first_priority")
# application states (domain.md); withdrawn and provided close an application for good
STATUSES = ("queued", "offered", "provided", "stop_listed", "withdrawn")
FINAL_STATUSES = ("withdrawn", "provided")
MAX_AGE_YEARS = 7
NAME_MAX = 200
DOCUMENT_MAX = 500

TOP_LEVEL_FIELDS = frozenset({
    "applicant", "child", "queue_type", "language", "district", "preferred_organizations",
    "desired_start", "benefit", "current_organization_id", "current_group_id",
})
APPLICANT_FIELDS = frozenset({"iin", "full_name", "phone"})
CHILD_FIELDS = frozenset({"iin", "full_name", "birth_date"})
BENEFIT_FIELDS = frozenset({"category", "document"})

# digit 7 of an IIN: century of birth and sex
_CENTURY = {1: 1800, 2: 1800, 3: 1900, 4: 1900, 5: 2000, 6: 2000}
_WEIGHTS_1 = tuple(range(1, 12))
_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
_PHONE = re.compile(r"^\+7\d{10}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-()]")


# -- IIN ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IinInfo:
    birth_date: dt.date
    sex: str  # "M" or "F"


def iin_check_digit(first_eleven: str) -> int | None:
    """The check digit for the first 11 digits, or None when no digit can make it valid."""
    digits = [int(c) for c in first_eleven]
    value = sum(d * w for d, w in zip(digits, _WEIGHTS_1)) % 11
    if value == 10:
        value = sum(d * w for d, w in zip(digits, _WEIGHTS_2)) % 11
        if value == 10:
            return None
    return value


def check_iin(iin: Any, field: str) -> IinInfo:
    """Validate an IIN; BadInput if it is not 12 digits, RuleRefused IIN_INVALID otherwise."""
    if not isinstance(iin, str) or len(iin) != 12 or not iin.isascii() or not iin.isdigit():
        raise BadInput("IIN must be a string of 12 digits", field=field, code="IIN_FORMAT")
    century_digit = int(iin[6])
    if century_digit not in _CENTURY:
        raise RuleRefused(f"IIN digit 7 must be 1-6 (century and sex), got {century_digit}",
                          field=field, code="IIN_INVALID")
    year = _CENTURY[century_digit] + int(iin[0:2])
    try:
        birth_date = dt.date(year, int(iin[2:4]), int(iin[4:6]))
    except ValueError:
        raise RuleRefused("IIN digits 1-6 are not a real date of birth", field=field,
                          code="IIN_INVALID") from None
    expected = iin_check_digit(iin[:11])
    if expected is None or expected != int(iin[11]):
        raise RuleRefused("IIN check digit does not match", field=field, code="IIN_INVALID")
    return IinInfo(birth_date, "M" if century_digit % 2 else "F")


def make_iin(birth_date: dt.date, sex: str, serial: int) -> str:
    """A valid IIN for this birth date and sex ("M"/"F") with digits 8-11 = ``serial``.

    Raises ValueError for the few serials (about 1 in 121) for which no check digit exists:
    pick another serial.
    """
    sex = sex.upper()[:1]
    if sex not in ("M", "F"):
        raise ValueError("sex must be 'M' or 'F'")
    if not 0 <= serial <= 9999:
        raise ValueError("serial must be 0..9999")
    base = {1800: 1, 1900: 3, 2000: 5}.get(birth_date.year // 100 * 100)
    if base is None:
        raise ValueError("IINs cover birth years 1800-2099")
    century_digit = base + (0 if sex == "M" else 1)
    first = f"{birth_date:%y%m%d}{century_digit}{serial:04d}"
    check = iin_check_digit(first)
    if check is None:
        raise ValueError(f"serial {serial} has no valid check digit for {birth_date}")
    return first + str(check)


# -- the new application --------------------------------------------------------------------------

@dataclass(frozen=True)
class NewApplication:
    """A validated, normalised application (the command that filing stores)."""

    applicant_iin: str
    applicant_name: str
    applicant_phone: str
    child_iin: str
    child_name: str
    child_birth_date: dt.date
    queue_type: str
    language: str
    district: str
    preferred_organizations: tuple[int, ...]
    desired_start: dt.date
    benefit_category: str | None
    benefit_document: str | None
    current_organization_id: int | None
    current_group_id: int | None

    @property
    def birth_year(self) -> int:
        return self.child_birth_date.year

    @property
    def queue_name(self) -> str:
        return queue_name(self.district, self.queue_type, self.birth_year)


def queue_name(district: str, queue_type: str, birth_year: int) -> str:
    """A queue is named by district, queue type and the child's birth year."""
    return f"{district}/{queue_type}/{birth_year}"


def age_in_years(birth_date: dt.date, today: dt.date) -> int:
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month,
                                                                       birth_date.day))


def _object(value: Any, field: str, allowed: frozenset[str]) -> dict:
    if not isinstance(value, dict):
        raise BadInput("must be an object", field=field, code="INVALID_INPUT")
    for key in value:
        if key not in allowed:
            raise BadInput(f"unknown field {key!r}", field=f"{field}.{key}",
                           code="UNKNOWN_FIELD")
    return value


def _text(value: Any, field: str, max_len: int = NAME_MAX) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput("must be a non-empty string", field=field, code="REQUIRED")
    value = " ".join(value.split())
    if len(value) > max_len:
        raise BadInput(f"must be at most {max_len} characters", field=field, code="TOO_LONG")
    return value


def _date(value: Any, field: str) -> dt.date:
    if not isinstance(value, str):
        raise BadInput("must be a date YYYY-MM-DD", field=field, code="INVALID_DATE")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadInput("must be a date YYYY-MM-DD", field=field, code="INVALID_DATE") from None


def _positive_int(value: Any, field: str) -> int:
    # bool is an int in Python; an organisation id of True is a client bug
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput("must be a positive integer", field=field, code="INVALID_ID")
    return value


def normalise_phone(value: Any, field: str = "applicant.phone") -> str:
    """+7 and 10 digits; spaces, dashes and brackets are dropped."""
    if not isinstance(value, str):
        raise BadInput("phone must be +7 and 10 digits", field=field, code="INVALID_PHONE")
    phone = _PHONE_SEPARATORS.sub("", value)
    if not _PHONE.match(phone):
        raise BadInput("phone must be +7 and 10 digits", field=field, code="INVALID_PHONE")
    return phone


def validate_new_application(data: Any, *, today: dt.date, categories: Mapping[str, str],
                             max_preferred: int = 3) -> NewApplication:
    """Check a new application (api.md shape) against domain.md; return it normalised.

    ``today`` is the local date from the database clock; ``categories`` maps benefit category
    codes to tiers. Raises BadInput (malformed) or RuleRefused (a rule refuses it) with the
    field path, e.g. ``child.iin``.
    """
    if not isinstance(data, dict):
        raise BadInput("the application must be an object", code="INVALID_INPUT")
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            # filed_at in particular: the filing moment is the database's, never the client's
            raise BadInput(f"unknown field {key!r}", field=key, code="UNKNOWN_FIELD")
    for key in ("applicant", "child", "queue_type", "language", "district",
                "preferred_organizations", "desired_start"):
        if key not in data:
            raise BadInput("is required", field=key, code="REQUIRED")

    applicant = _object(data["applicant"], "applicant", APPLICANT_FIELDS)
    for key in sorted(APPLICANT_FIELDS):
        if key not in applicant:
            raise BadInput("is required", field=f"applicant.{key}", code="REQUIRED")
    check_iin(applicant["iin"], "applicant.iin")
    applicant_name = _text(applicant["full_name"], "applicant.full_name")
    phone = normalise_phone(applicant["phone"])

    child = _object(data["child"], "child", CHILD_FIELDS)
    for key in ("iin", "full_name", "birth_date"):
        if key not in child:
            raise BadInput("is required", field=f"child.{key}", code="REQUIRED")
    child_iin = check_iin(child["iin"], "child.iin")
    child_name = _text(child["full_name"], "child.full_name")
    birth_date = _date(child["birth_date"], "child.birth_date")
    if birth_date != child_iin.birth_date:
        raise RuleRefused("the birth date does not match the child's IIN",
                          field="child.birth_date", code="BIRTH_DATE_MISMATCH")
    if birth_date > today:
        raise RuleRefused("the birth date is in the future", field="child.birth_date",
                          code="BIRTH_DATE_IN_FUTURE")
    if age_in_years(birth_date, today) >= MAX_AGE_YEARS:
        raise RuleRefused(f"the child must be under {MAX_AGE_YEARS}", field="child.birth_date",
                          code="CHILD_TOO_OLD")

    queue_type = data["queue_type"]
    if queue_type not in QUEUE_TYPES:
        raise BadInput(f"must be one of {', '.join(QUEUE_TYPES)}", field="queue_type",
                       code="INVALID_CHOICE")
    language = data["language"]
    if language not in LANGUAGES:
        raise BadInput(f"must be one of {', '.join(LANGUAGES)}", field="language",
                       code="INVALID_CHOICE")
    district = _text(data["district"], "district")

    prefs = data["preferred_organizations"]
    if not isinstance(prefs, list) or not prefs:
        raise BadInput("choose at least one organisation", field="preferred_organizations",
                       code="REQUIRED")
    if len(prefs) > max_preferred:
        raise BadInput(f"choose at most {max_preferred} organisations",
                       field="preferred_organizations", code="TOO_MANY")
    preferred = tuple(_positive_int(v, f"preferred_organizations[{i}]")
                      for i, v in enumerate(prefs))
    if len(set(preferred)) != len(preferred):
        raise BadInput("an organisation is chosen twice", field="preferred_organizations",
                       code="DUPLICATE")

    desired_start = _date(data["desired_start"], "desired_start")
    if desired_start < today:
        raise RuleRefused("the desired start date is in the past", field="desired_start",
                          code="DATE_IN_PAST")

    category = document = None
    benefit = data.get("benefit")
    if benefit is not None:
        benefit = _object(benefit, "benefit", BENEFIT_FIELDS)
        category = benefit.get("category")
        if not isinstance(category, str) or category not in categories:
            raise BadInput("unknown benefit category", field="benefit.category",
                           code="UNKNOWN_BENEFIT_CATEGORY")
        document = _text(benefit.get("document"), "benefit.document", DOCUMENT_MAX)

    current_org = data.get("current_organization_id")
    current_group = data.get("current_group_id")
    if queue_type == "transfer":
        if current_org is None:
            raise BadInput("a transfer needs the current organisation",
                           field="current_organization_id", code="REQUIRED")
        if current_group is None:
            raise BadInput("a transfer needs the current group", field="current_group_id",
                           code="REQUIRED")
        current_org = _positive_int(current_org, "current_organization_id")
        current_group = _positive_int(current_group, "current_group_id")
    else:
        for key, value in (("current_organization_id", current_org),
                           ("current_group_id", current_group)):
            if value is not None:
                raise BadInput("only a transfer application names a current organisation",
                               field=key, code="NOT_ALLOWED")

    return NewApplication(
        applicant_iin=applicant["iin"],
        applicant_name=applicant_name,
        applicant_phone=phone,
        child_iin=child["iin"],
        child_name=child_name,
        child_birth_date=birth_date,
        queue_type=queue_type,
        language=language,
        district=district,
        preferred_organizations=preferred,
        desired_start=desired_start,
        benefit_category=category,
        benefit_document=document,
        current_organization_id=current_org,
        current_group_id=current_group,
    )


# -- who may do what ------------------------------------------------------------------------------

READ_ANY_ROLES = ("staff", "officer", "system")
FILE_ROLES = ("applicant", "officer", "operator", "system")
WITHDRAW_ROLES = ("applicant", "officer", "system")


def check_actor(actor: Any) -> dict:
    if not isinstance(actor, dict) or not actor.get("id") or not actor.get("role"):
        raise Unauthorized("an actor with id and role is required", field="actor")
    return actor


def applicant_id_for(actor: dict, phone: str) -> str:
    """Who owns a new application: the signed-in applicant, or the applicant named in it when
    an officer, operator or the system files on their behalf (paper forms, demo loader)."""
    if actor["role"] not in FILE_ROLES:
        raise Forbidden("this role cannot file applications", field="actor")
    if actor["role"] == "applicant":
        return actor["id"]
    return f"applicant:{phone}"


def check_can_read(actor: dict, owner_id: str) -> None:
    if actor["role"] == "applicant":
        if actor["id"] != owner_id:
            raise Forbidden("this application belongs to another applicant",
                            field="application_number")
    elif actor["role"] not in READ_ANY_ROLES:
        raise Forbidden("this role cannot read applications", field="actor")


def check_can_withdraw(actor: dict, owner_id: str, status: str) -> None:
    if actor["role"] not in WITHDRAW_ROLES:
        raise Forbidden("this role cannot withdraw applications", field="actor")
    if actor["role"] == "applicant" and actor["id"] != owner_id:
        raise Forbidden("this application belongs to another applicant",
                        field="application_number")
    if status == "withdrawn":
        raise Conflict("the application is already withdrawn", field="application_number",
                       code="ALREADY_WITHDRAWN")
    if status == "provided":
        raise Conflict("the child already has a place: the application is closed",
                       field="application_number", code="APPLICATION_CLOSED")


def check_can_verify(actor: dict, status: str, claim_status: str | None) -> None:
    if actor["role"] != "officer":
        raise Forbidden("only a department officer verifies benefits", field="actor")
    if claim_status is None:
        raise Conflict("the application claims no benefit", field="application_number",
                       code="NO_BENEFIT_CLAIM")
    if claim_status != "claimed":
        raise Conflict("the benefit claim is already verified", field="application_number",
                       code="ALREADY_VERIFIED")
    if status in FINAL_STATUSES:
        raise Conflict(f"the application is {status}", field="application_number",
                       code="APPLICATION_CLOSED")


# -- status changes reported by queue and allocation ----------------------------------------------

def next_status(current: str, reported: str) -> str | None:
    """The application's status after another service reports ``reported``; None: no change.

    Withdrawal and enrolment are final; an unknown status changes nothing."""
    if current in FINAL_STATUSES or reported not in STATUSES or reported == current:
        return None
    return reported


def feed_kind_for_status(previous: str, new: str) -> str | None:
    """Which feed entry a status change writes (None: none).

    ``offered`` writes none here: the direction event carries the number and expiry.
    ``queued`` writes "back in queue" only after the stop-list: after ``offered`` it means a
    place was reserved and released before any direction reached the parent (a declined,
    expired or revoked direction puts the child on the stop-list instead).
    """
    if new in ("stop_listed", "provided", "withdrawn"):
        return new
    if new == "queued" and previous == "stop_listed":
        return "back_in_queue"
    return None
