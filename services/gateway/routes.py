"""The route table: every HTTP route of the gateway, in one place.

The entrypoints (service.py, ``@route("name")``), the input checks (validation.py) and the OpenAPI
document (openapi.py) are all read from this table, so what the document says is what the
gateway does. A unit test checks that every route has exactly one handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# -- schema helpers -----------------------------------------------------------------------------
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def obj(
    properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = False, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def text(max_length: int = 200, **extra: Any) -> dict[str, Any]:
    # PostgreSQL text cannot hold NUL
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": r"^[^\x00]*$",
        **extra,
    }


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


INT = {"type": "integer"}
ID = {"type": "integer", "minimum": 1, "maximum": 2**53}
# application numbers (A000000123) and direction numbers (D000000042)
NUMBER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    "example": "A000000123",
}
BOOL = {"type": "boolean"}
STR = {"type": "string"}
DATE = {"type": "string", "format": "date"}
DATETIME = {"type": "string", "format": "date-time"}
ANY: dict[str, Any] = {}

LANGUAGE = enum("kk", "ru")
OWNERSHIP = enum("state", "private")
KIND = enum("kindergarten", "nursery", "mini_center", "sanatorium", "special")
GROUP_TYPE = enum("general", "special", "sanatorium", "short_stay")
QUEUE_TYPE = enum("general", "transfer", "special", "sanatorium")
QUEUE_STATUS = enum("queued", "offered", "provided", "stop_listed", "withdrawn")
DIRECTION_TYPE = enum("priority", "vacancy", "transfer")
DIRECTION_STATUS = enum("issued", "enrolled", "declined", "expired", "revoked")
BENEFIT_TIER = enum("out_of_turn", "first_priority")
BIRTH_YEAR = {"type": "integer", "minimum": 1990, "maximum": 2100}
ROLE = enum("applicant", "staff", "officer", "auditor", "operator")
STOP_REASON = enum("postponed", "direction_declined", "direction_expired", "documents_check")

# -- shapes (api.md "Shapes"; more fields may be present) ---------------------------------------
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string", "description": "stable code, e.g. INVALID_JSON"},
                    "message": {"type": "string"},
                    "field": nullable({"type": "string", "description": "the offending field"}),
                },
                required=("code", "message", "field"),
            ),
        },
        required=("error",),
    ),
    "Group": obj(
        {
            "id": ID,
            "name": STR,
            "group_type": GROUP_TYPE,
            "birth_year": INT,
            "language": LANGUAGE,
            "capacity": INT,
            "enrolled": INT,
            "organization_id": ID,
        },
        required=("id", "name", "group_type", "birth_year", "language"),
    ),
    "Organization": obj(
        {
            "id": ID,
            "name": STR,
            "address": nullable(STR),
            "district": STR,
            "ownership": OWNERSHIP,
            "kind": KIND,
            "languages": {"type": "array", "items": LANGUAGE},
            "monthly_fee_kzt": nullable({"type": "number"}),
            "groups": {"type": "array", "items": ref("Group")},
            "vacancies": INT,
            "has_vacancies": BOOL,
        },
        required=("id", "name", "district", "ownership", "kind"),
    ),
    "StopList": nullable(
        obj(
            {
                "entered_at": nullable(STR),
                "exits_at": nullable(STR),
                "reason": nullable(STR),
            }
        )
    ),
    "QueueRow": obj(
        {
            "queue_name": STR,
            "queue_number": nullable(INT),
            "applicant_name": STR,
            "child_name": STR,
            "application_number": STR,
            "filed_at": DATETIME,
            "status": QUEUE_STATUS,
            "queue_type": QUEUE_TYPE,
            # "none": no benefit (the registry says so rather than null)
            "benefit_tier": nullable(enum("out_of_turn", "first_priority", "none")),
            "stop_list": ref("StopList"),
            "provided": BOOL,
        },
        required=("queue_name", "application_number", "status"),
    ),
    "Vacancy": obj(
        {
            "place_id": {"type": "string", "format": "uuid"},
            "organization_id": ID,
            "organization_name": STR,
            "ownership": OWNERSHIP,
            "address": nullable(STR),
            "birth_year": INT,
            "language": LANGUAGE,
            "group_type": GROUP_TYPE,
            "in_priority_period": BOOL,
            "priority_starts_at": nullable(DATETIME),
            "priority_ends_at": nullable(DATETIME),
        },
        required=("place_id", "organization_id"),
    ),
    "Release": obj(
        {
            "place_id": {"type": "string", "format": "uuid"},
            "organization_id": ID,
            "organization_name": STR,
            "ownership": OWNERSHIP,
            "address": nullable(STR),
            "group_name": nullable(STR),
            "group_type": GROUP_TYPE,
            "birth_year": INT,
            "language": LANGUAGE,
            "released_at": nullable(DATETIME),
            "priority_starts_at": nullable(DATETIME),
            "priority_ends_at": nullable(DATETIME),
        },
        required=("place_id",),
    ),
    "Direction": obj(
        {
            "number": STR,
            "issued_at": nullable(DATETIME),
            "expires_at": nullable(DATETIME),
            "child_name": STR,
            "organization_id": ID,
            "organization_name": nullable(STR),
            "birth_year": INT,
            "language": LANGUAGE,
            "type": DIRECTION_TYPE,
            "status": DIRECTION_STATUS,
            "place_id": STR,
            "application_number": nullable(STR),
        },
        required=("number", "status"),
    ),
    "FeedEntry": obj(
        {
            "at": DATETIME,
            "kind": STR,
            "application_number": nullable(STR),
            "text": obj({"kk": STR, "ru": STR}),
        },
        required=("at", "kind"),
    ),
    "AuditRecord": obj(
        {
            name: nullable(STR)
            for name in (
                "id",
                "at",
                "request_id",
                "actor",
                "role",
                "action",
                "target",
                "outcome",
                "ip",
                "forwarded_for",
                "user_agent",
                "fingerprint",
                "server_fingerprint",
                "hash",
                "prev_hash",
            )
        },
        required=("id", "action"),
    ),
    "Application": obj(
        {
            "application_number": STR,
            "status": QUEUE_STATUS,
            "queue_name": STR,
            "queue_number": nullable(INT),
            "filed_at": DATETIME,
            "history": {"type": "array", "items": {"type": "object"}},
        },
        required=("application_number",),
    ),
    "FiledApplication": obj(
        {
            "application_number": STR,
            "queue_name": STR,
            "queue_number": nullable(INT),
            "filed_at": DATETIME,
            "status": STR,
        },
        required=("application_number", "queue_name", "filed_at", "status"),
    ),
    "District": obj({"name": STR}, required=("name",)),
    "Language": obj(
        {"code": LANGUAGE, "name": obj({"kk": STR, "ru": STR})}, required=("code", "name")
    ),
    "BenefitCategory": obj(
        {
            "code": STR,
            "tier": nullable(BENEFIT_TIER),
            "name": obj({"kk": STR, "ru": STR}),
        },
        required=("code",),
    ),
    "Token": obj(
        {"token": STR, "role": ROLE, "expires_at": DATETIME},
        required=("token", "role", "expires_at"),
    ),
    "CodeSent": obj({"status": STR, "expires_at": DATETIME}, required=("status",)),
    "Releases": obj({"place_ids": {"type": "array", "items": STR}}, required=("place_ids",)),
    "Claim": obj(
        {"status": enum("pooled", "issued"), "direction": nullable(ref("Direction"))},
        required=("status",),
    ),
    "ChainCheck": obj(
        {"ok": BOOL, "records": INT, "head": STR, "broken": {"type": "object"}}, required=("ok",)
    ),
    "Statistics": {"type": "object", "description": "anonymised figures (05-23)"},
}


def page_of(item: str) -> dict[str, Any]:
    return obj(
        {
            "items": {"type": "array", "items": ref(item)},
            "total": {"type": "integer", "minimum": 0},
            "page": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1},
            "republished_at": nullable(STR),
        },
        required=("items", "total", "page", "page_size"),
    )


# -- request bodies -----------------------------------------------------------------------------
PHONE_INPUT = {
    "type": "string",
    "pattern": r"^\+[1-9][0-9]{9,14}$",
    "example": "+77011234567",
    "description": "international form (E.164)",
}
BODIES: dict[str, dict[str, Any]] = {
    "OtpRequest": obj({"phone": PHONE_INPUT}, required=("phone",)),
    "TokenRequest": obj(
        {"phone": PHONE_INPUT, "code": {"type": "string", "pattern": "^[0-9]{6}$"}},
        required=("phone", "code"),
    ),
    "NewApplication": obj(
        {
            "applicant": obj(
                {"iin": text(20), "full_name": text(200), "phone": text(32)},
                required=("iin", "full_name", "phone"),
                closed=True,
            ),
            "child": obj(
                {"iin": text(20), "full_name": text(200), "birth_date": DATE},
                required=("iin", "full_name", "birth_date"),
                closed=True,
            ),
            "queue_type": QUEUE_TYPE,
            "language": LANGUAGE,
            "district": text(120),
            "preferred_organizations": {
                "type": "array",
                "items": ID,
                "minItems": 1,
                "maxItems": 10,
            },
            "desired_start": DATE,
            "benefit": nullable(
                obj(
                    {"category": text(64), "document": text(500)},
                    required=("category", "document"),
                    closed=True,
                )
            ),
            "current_organization_id": nullable(ID),
            "current_group_id": nullable(ID),
        },
        required=(
            "applicant",
            "child",
            "queue_type",
            "language",
            "district",
            "preferred_organizations",
            "desired_start",
        ),
        closed=True,
    ),
    "Postpone": obj({"until": DATE}, required=("until",)),
    "ClaimRequest": obj({"application_number": NUMBER}, required=("application_number",)),
    "ReleaseRequest": obj(
        {"places": {"type": "integer", "minimum": 1, "maximum": 100}}, required=("places",)
    ),
    "OrganizationData": obj(
        {
            "name": text(300),
            "address": text(500),
            "district": text(120),
            "ownership": OWNERSHIP,
            "kind": KIND,
            "languages": {"type": "array", "items": LANGUAGE, "minItems": 1, "maxItems": 2},
            "monthly_fee_kzt": nullable({"type": "integer", "minimum": 0, "maximum": 10_000_000}),
        },
        minProperties=1,
    ),
    "GroupData": obj(
        {
            "name": text(200),
            "group_type": GROUP_TYPE,
            "birth_year": BIRTH_YEAR,
            "language": LANGUAGE,
            "capacity": {"type": "integer", "minimum": 1, "maximum": 1000},
            "enrolled": {"type": "integer", "minimum": 0, "maximum": 1000},
        },
        required=("name", "group_type", "birth_year", "language", "capacity"),
    ),
    "BenefitVerification": obj(
        {"approved": BOOL, "note": nullable(text(1000))}, required=("approved",)
    ),
    "StopListEntry": obj({"reason": STOP_REASON, "until": nullable(DATE)}, required=("reason",)),
    "Revocation": obj({"reason": text(1000)}, required=("reason",)),
}
BODIES["NewOrganization"] = {
    **BODIES["OrganizationData"],
    "required": ["name", "address", "district", "ownership", "kind", "languages"],
}

# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


PATH_PARAMS: dict[str, Param] = {
    "id": Param("id", ID, True, "organisation id"),
    "group_id": Param("group_id", ID, True, "group id"),
    "number": Param("number", NUMBER, True, "application or direction number"),
    "place_id": Param("place_id", {"type": "string", "format": "uuid"}, True, "place id"),
    "asset": Param("asset", {"type": "string", "pattern": r"^[a-z0-9_-]+\.[a-z]+$"}, True),
}
PAGE_PARAMS = (
    Param("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
    Param(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    ),
)
FORMAT_PARAM = Param(
    "format", enum("json", "csv"), description="csv gives CSV (as does Accept: text/csv)"
)


def q(name: str, schema: dict[str, Any], description: str = "") -> Param:
    return Param(name, schema, False, description)


DISTRICT = q("district", text(120))
ORGANIZATION = q("organization_id", ID)
BIRTH = q("birth_year", BIRTH_YEAR, "the age period: birth year of the children")
LANG = q("language", LANGUAGE)
FROM_DATE = q("from", DATE, "from this date (inclusive, local time)")
TO_DATE = q("to", DATE, "to this date (inclusive, local time)")
MOMENT = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.]+([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$",
    "description": "date or ISO date-time (local time without an offset)",
}


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    name: str  # the GatewayService method that handles it
    method: str
    path: str  # OpenAPI template: /api/v1/organizations/{id}
    summary: str
    tag: str
    roles: tuple[str, ...] | None = None  # None: public
    query: tuple[Param, ...] = ()
    body: str | None = None  # a BODIES key
    status: int = 200
    response: dict[str, Any] | None = None
    paged: bool = False  # page/page_size parameters
    csv: bool = False  # ?format=csv / Accept: text/csv
    csv_columns: tuple[str, ...] = ()  # when the service does not name its columns
    mutating: bool = False  # accepts Idempotency-Key
    own_organization: str | None = None  # staff may only touch the organisation in this param
    kind: str = "api"  # api | ops (not audited, not limited) | page | static (as ops) | fallback
    content_type: str = "application/json"
    description: str = ""

    @property
    def rule(self) -> str:
        """The werkzeug URL rule."""
        return re.sub(r"{(\w+)}", r"<\1>", self.path)

    @property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(PATH_PARAMS[n] for n in re.findall(r"{(\w+)}", self.path))

    @property
    def query_params(self) -> tuple[Param, ...]:
        extra: tuple[Param, ...] = ()
        if self.paged:
            extra += PAGE_PARAMS
        if self.csv:
            extra += (FORMAT_PARAM,)
        return self.query + extra

    @property
    def audited(self) -> bool:
        return self.kind not in ("ops", "static")

    @property
    def label(self) -> str:
        """The route label of metrics (a template, never a concrete id)."""
        return "unmatched" if self.kind == "fallback" else self.path


QUEUE_ROW_COLUMNS = (
    "queue_name",
    "queue_number",
    "application_number",
    "applicant_name",
    "child_name",
    "filed_at",
    "status",
    "queue_type",
    "benefit_tier",
    "stop_list.entered_at",
    "stop_list.exits_at",
    "stop_list.reason",
    "provided",
)
ORG_COLUMNS = (
    "id",
    "name",
    "address",
    "district",
    "ownership",
    "kind",
    "languages",
    "monthly_fee_kzt",
    "vacancies",
)
VACANCY_COLUMNS = (
    "place_id",
    "organization_id",
    "organization_name",
    "ownership",
    "address",
    "birth_year",
    "language",
    "group_type",
    "in_priority_period",
    "priority_starts_at",
    "priority_ends_at",
)
RELEASE_COLUMNS = (
    "released_at",
    "organization_name",
    "ownership",
    "address",
    "group_name",
    "group_type",
    "birth_year",
    "language",
    "priority_starts_at",
    "priority_ends_at",
    "place_id",
    "organization_id",
)
DIRECTION_COLUMNS = (
    "number",
    "issued_at",
    "expires_at",
    "child_name",
    "organization_id",
    "organization_name",
    "birth_year",
    "language",
    "type",
    "status",
    "place_id",
)
AUDIT_COLUMNS = (
    "id",
    "at",
    "request_id",
    "actor",
    "role",
    "action",
    "target",
    "outcome",
    "ip",
    "forwarded_for",
    "user_agent",
    "fingerprint",
    "server_fingerprint",
    "hash",
    "prev_hash",
)
STATISTICS_COLUMNS = (
    "section",
    "day",
    "queue_name",
    "district",
    "queue_type",
    "birth_year",
    "direction_type",
    "organization_id",
    "organization_name",
    "source",
    "event_type",
    "measure",
    "value",
)

APPLICANT = ("applicant",)
STAFF = ("staff",)
OFFICER = ("officer",)
AUDITOR = ("auditor",)

ROUTES: tuple[Route, ...] = (
    # -- public registries (05-15..05-23) ---------------------------------------------------------
    Route(
        "list_organizations",
        "GET",
        "/api/v1/organizations",
        "Registry of organisations (05-17)",
        "public",
        query=(
            DISTRICT,
            LANG,
            q("age_group", BIRTH_YEAR, "birth year of a group"),
            q("ownership", OWNERSHIP),
            q("kind", KIND),
            q("has_vacancies", BOOL),
            q("group_type", GROUP_TYPE),
        ),
        response=page_of("Organization"),
        paged=True,
        csv=True,
        csv_columns=ORG_COLUMNS,
    ),
    Route(
        "get_organization",
        "GET",
        "/api/v1/organizations/{id}",
        "One organisation with its groups",
        "public",
        response=ref("Organization"),
    ),
    Route(
        "list_queue",
        "GET",
        "/api/v1/queue",
        "Queue registry (05-18)",
        "public",
        query=(
            DISTRICT,
            q("queue_type", QUEUE_TYPE),
            BIRTH,
            LANG,
            ORGANIZATION,
            q("status", enum("queued", "offered", "stop_listed", "provided")),
            q("benefit_tier", enum("out_of_turn", "first_priority", "none")),
        ),
        response=page_of("QueueRow"),
        paged=True,
        csv=True,
        csv_columns=QUEUE_ROW_COLUMNS,
    ),
    Route(
        "queue_lookup",
        "GET",
        "/api/v1/queue/lookup",
        "Queue-number information (05-22)",
        "public",
        query=(Param("application_number", NUMBER, True),),
        response=ref("QueueRow"),
        csv=True,
        csv_columns=QUEUE_ROW_COLUMNS,
    ),
    Route(
        "list_vacancies",
        "GET",
        "/api/v1/vacancies",
        "Vacant places (05-19)",
        "public",
        query=(
            DISTRICT,
            ORGANIZATION,
            BIRTH,
            LANG,
            q("ownership", OWNERSHIP),
            q("group_type", GROUP_TYPE),
            q("queue_type", QUEUE_TYPE),
            q("in_priority_period", BOOL),
        ),
        response=page_of("Vacancy"),
        paged=True,
        csv=True,
        csv_columns=VACANCY_COLUMNS,
    ),
    Route(
        "list_releases",
        "GET",
        "/api/v1/releases",
        "Place-release protocol (05-20)",
        "public",
        query=(
            FROM_DATE,
            TO_DATE,
            DISTRICT,
            ORGANIZATION,
            BIRTH,
            LANG,
            q("ownership", OWNERSHIP),
            q("group_type", GROUP_TYPE),
        ),
        response=page_of("Release"),
        paged=True,
        csv=True,
        csv_columns=RELEASE_COLUMNS,
    ),
    Route(
        "list_directions",
        "GET",
        "/api/v1/directions",
        "Issued-directions protocol (05-21)",
        "public",
        query=(
            FROM_DATE,
            TO_DATE,
            DISTRICT,
            ORGANIZATION,
            BIRTH,
            LANG,
            q("type", DIRECTION_TYPE),
            q("status", DIRECTION_STATUS),
        ),
        response=page_of("Direction"),
        paged=True,
        csv=True,
        csv_columns=DIRECTION_COLUMNS,
    ),
    Route(
        "statistics",
        "GET",
        "/api/v1/statistics",
        "Anonymised statistics (05-23)",
        "public",
        query=(
            FROM_DATE,
            TO_DATE,
            DISTRICT,
            ORGANIZATION,
            BIRTH,
            LANG,
            q("queue_type", QUEUE_TYPE),
        ),
        response=ref("Statistics"),
        csv=True,
        csv_columns=STATISTICS_COLUMNS,
    ),
    Route(
        "list_districts",
        "GET",
        "/api/v1/districts",
        "Districts (reference data)",
        "public",
        response=page_of("District"),
        csv=True,
        csv_columns=("name",),
    ),
    Route(
        "benefit_categories",
        "GET",
        "/api/v1/benefit-categories",
        "Benefit categories (reference data)",
        "public",
        response=page_of("BenefitCategory"),
        csv=True,
        csv_columns=("code", "tier", "name.kk", "name.ru"),
    ),
    Route(
        "languages",
        "GET",
        "/api/v1/languages",
        "Languages of instruction (reference data)",
        "public",
        response=page_of("Language"),
        csv=True,
        csv_columns=("code", "name.kk", "name.ru"),
        description="Served by the gateway itself (no service call); audited like any request.",
    ),
    # -- sign-in ----------------------------------------------------------------------------------
    Route(
        "request_code",
        "POST",
        "/api/v1/auth/otp",
        "Send a one-time code by SMS",
        "sign-in",
        body="OtpRequest",
        status=202,
        response=ref("CodeSent"),
    ),
    Route(
        "issue_token",
        "POST",
        "/api/v1/auth/token",
        "Exchange the code for a token",
        "sign-in",
        body="TokenRequest",
        response=ref("Token"),
    ),
    # -- applicant --------------------------------------------------------------------------------
    Route(
        "file_application",
        "POST",
        "/api/v1/applications",
        "File an application",
        "applicant",
        roles=("applicant", "officer"),
        body="NewApplication",
        status=201,
        response=ref("FiledApplication"),
        mutating=True,
    ),
    Route(
        "my_applications",
        "GET",
        "/api/v1/applications",
        "Own applications",
        "applicant",
        roles=APPLICANT,
        response=page_of("Application"),
        paged=True,
    ),
    Route(
        "get_application",
        "GET",
        "/api/v1/applications/{number}",
        "One application with its history",
        "applicant",
        roles=("applicant", "staff", "officer"),
        response=ref("Application"),
    ),
    Route(
        "withdraw",
        "POST",
        "/api/v1/applications/{number}/withdraw",
        "Withdraw an application (final)",
        "applicant",
        roles=("applicant", "officer"),
        response=ref("Application"),
        mutating=True,
    ),
    Route(
        "postpone",
        "POST",
        "/api/v1/applications/{number}/postpone",
        "Stop-list at own request until a date",
        "applicant",
        roles=APPLICANT,
        body="Postpone",
        response=ref("QueueRow"),
        mutating=True,
    ),
    Route(
        "resume",
        "POST",
        "/api/v1/applications/{number}/resume",
        "Back to the queue from the stop-list",
        "applicant",
        roles=APPLICANT,
        response=ref("QueueRow"),
        mutating=True,
    ),
    Route(
        "claim_vacancy",
        "POST",
        "/api/v1/vacancies/{place_id}/claim",
        "Claim a vacancy",
        "applicant",
        roles=APPLICANT,
        body="ClaimRequest",
        response=ref("Claim"),
        mutating=True,
    ),
    Route(
        "decline",
        "POST",
        "/api/v1/directions/{number}/decline",
        "Decline a direction",
        "applicant",
        roles=APPLICANT,
        response=ref("Direction"),
        mutating=True,
    ),
    Route(
        "my_events",
        "GET",
        "/api/v1/me/events",
        "The personal event feed (05-5)",
        "applicant",
        roles=APPLICANT,
        response=page_of("FeedEntry"),
        paged=True,
    ),
    # -- organisation staff -----------------------------------------------------------------------
    Route(
        "release_places",
        "POST",
        "/api/v1/organizations/{id}/groups/{group_id}/releases",
        "Release places of a group",
        "staff",
        roles=STAFF,
        body="ReleaseRequest",
        status=201,
        response=ref("Releases"),
        mutating=True,
        own_organization="id",
    ),
    Route(
        "enroll",
        "POST",
        "/api/v1/directions/{number}/enroll",
        "The child arrived: enrolment",
        "staff",
        roles=STAFF,
        response=ref("Direction"),
        mutating=True,
    ),
    # -- department officer -----------------------------------------------------------------------
    Route(
        "create_organization",
        "POST",
        "/api/v1/organizations",
        "Add an organisation",
        "officer",
        roles=OFFICER,
        body="NewOrganization",
        status=201,
        response=ref("Organization"),
        mutating=True,
    ),
    Route(
        "update_organization",
        "PUT",
        "/api/v1/organizations/{id}",
        "Change an organisation",
        "officer",
        roles=OFFICER,
        body="OrganizationData",
        response=ref("Organization"),
        mutating=True,
    ),
    Route(
        "add_group",
        "POST",
        "/api/v1/organizations/{id}/groups",
        "Add a group",
        "officer",
        roles=("officer", "staff"),
        body="GroupData",
        status=201,
        response=ref("Group"),
        mutating=True,
        own_organization="id",
    ),
    Route(
        "verify_benefit",
        "POST",
        "/api/v1/applications/{number}/benefit/verify",
        "Verify a benefit claim",
        "officer",
        roles=OFFICER,
        body="BenefitVerification",
        response=ref("Application"),
        mutating=True,
    ),
    Route(
        "stop_list_enter",
        "POST",
        "/api/v1/applications/{number}/stop-list",
        "Put an application on the stop-list",
        "officer",
        roles=OFFICER,
        body="StopListEntry",
        response=ref("QueueRow"),
        mutating=True,
    ),
    Route(
        "stop_list_exit",
        "POST",
        "/api/v1/applications/{number}/stop-list/exit",
        "Take an application off the stop-list",
        "officer",
        roles=OFFICER,
        response=ref("QueueRow"),
        mutating=True,
    ),
    Route(
        "revoke",
        "POST",
        "/api/v1/directions/{number}/revoke",
        "Revoke a direction",
        "officer",
        roles=OFFICER,
        body="Revocation",
        response=ref("Direction"),
        mutating=True,
    ),
    # -- auditor ----------------------------------------------------------------------------------
    Route(
        "audit_log",
        "GET",
        "/api/v1/audit",
        "The action log (05-29)",
        "auditor",
        roles=AUDITOR,
        query=tuple(
            q(n, text(500))
            for n in (
                "actor",
                "role",
                "action",
                "target",
                "ip",
                "fingerprint",
                "outcome",
                "request_id",
            )
        )
        + (q("from", MOMENT), q("to", MOMENT)),
        response=page_of("AuditRecord"),
        paged=True,
        csv=True,
        csv_columns=AUDIT_COLUMNS,
    ),
    Route(
        "audit_verify",
        "GET",
        "/api/v1/audit/verify",
        "Check the audit hash chain",
        "auditor",
        roles=AUDITOR,
        response=ref("ChainCheck"),
    ),
    # -- the document itself, operations, pages ---------------------------------------------------
    Route(
        "openapi",
        "GET",
        "/api/v1/openapi.json",
        "This OpenAPI document",
        "operations",
        response={"type": "object"},
    ),
    Route(
        "healthz",
        "GET",
        "/healthz",
        "Alive",
        "operations",
        kind="ops",
        response=obj({"alive": BOOL}, required=("alive",)),
    ),
    Route(
        "readyz",
        "GET",
        "/readyz",
        "Broker and database reachable",
        "operations",
        kind="ops",
        response=obj({"ready": BOOL, "checks": {"type": "object"}}, required=("ready",)),
    ),
    Route(
        "metrics",
        "GET",
        "/metrics",
        "Prometheus metrics",
        "operations",
        kind="ops",
        content_type="text/plain",
    ),
    # web pages (web.py, pages.py): HTML, audited like the API, not in the OpenAPI document
    *(
        Route(name, "GET", path, summary, "pages", kind="page", content_type="text/html")
        for name, path, summary in (
            ("home", "/", "Home: queue-number lookup, links"),
            ("page_lookup", "/queue/lookup", "Queue-number lookup page (05-22)"),
            ("page_organizations", "/organizations", "Registry of organisations page"),
            ("page_organization", "/organizations/{id}", "One organisation page"),
            ("page_queue", "/queue", "Queue registry page"),
            ("page_vacancies", "/vacancies", "Vacant places page"),
            ("page_releases", "/releases", "Place-release protocol page"),
            ("page_directions", "/directions", "Issued-directions protocol page"),
            ("page_statistics", "/statistics", "Statistics page"),
            ("page_sign_in", "/sign-in", "Sign-in page"),
            ("page_apply", "/apply", "Application form"),
            ("page_me", "/me", "The parent's applications"),
            ("page_feed", "/me/feed", "The parent's event feed"),
            ("page_staff", "/staff", "Organisation staff: groups, releases, enrolment"),
            ("page_officer", "/officer", "Department officer: benefits, stop-list, organisations"),
            ("page_audit", "/audit", "Auditor: search and verify the log"),
        )
    ),
    Route(
        "static",
        "GET",
        "/static/{asset}",
        "The pages' script and stylesheet",
        "pages",
        kind="static",
    ),
    Route(
        "not_found",
        "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS",
        "/<path:path>",
        "Anything else",
        "pages",
        kind="fallback",
    ),
)

BY_NAME: dict[str, Route] = {r.name: r for r in ROUTES}
assert len(BY_NAME) == len(ROUTES), "route names must be unique"
