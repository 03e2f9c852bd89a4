"""HTTP-level input checks driven by the same schemas the OpenAPI document shows.

Only shapes and types are checked here (a JSON object, a date string, an integer in bounds);
the rules of domain.md stay in the services. Errors name the field: ``child.birth_date``,
``preferred_organizations[1]``, or the query parameter.

The schemas are a small subset of OpenAPI 3.0 schema objects: type, nullable, enum, format
(date, date-time, uuid), pattern, minLength/maxLength, minimum/maximum, properties, required,
additionalProperties (false only), minProperties, items, minItems/maxItems.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any, Mapping

from services.gateway.errors import BadInput, InvalidParameter

_INT_RE = re.compile(r"^[+-]?[0-9]{1,18}$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_DATETIME_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)


def _check_format(fmt: str | None, value: str) -> bool:
    if fmt == "date":
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return False
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            return False
    elif fmt == "date-time":
        if not _DATETIME_RE.fullmatch(value):
            return False
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return False
    elif fmt == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return bool(re.fullmatch(r"[0-9a-fA-F-]{36}", value))
    return True


def _describe(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type", "value")
    fmt = schema.get("format")
    if fmt == "date":
        return "a date YYYY-MM-DD"
    if fmt == "date-time":
        return "an ISO date-time like 2027-01-31T09:00:00+05:00"
    if fmt == "uuid":
        return "a UUID"
    return {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "string": "text",
        "object": "an object",
        "array": "a list",
    }.get(kind, kind)


def validate(
    schema: Mapping[str, Any], value: Any, field: str | None = None, error=BadInput
) -> Any:
    """Check ``value`` against ``schema``; return it; raise ``error`` naming the field."""
    name = field or "body"
    if value is None:
        if schema.get("nullable") or not schema:
            return None
        raise error(f"{name} is required and must be {_describe(schema)}", field)
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise error(f"{name} must be an object", field)
        for key in schema.get("required", ()):
            if key not in value:
                path = f"{field}.{key}" if field else key
                raise error(f"{path} is required", path)
        if len(value) < schema.get("minProperties", 0):
            raise error(f"{name} must not be empty", field)
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            for key in value:
                if key not in props:
                    path = f"{field}.{key}" if field else key
                    raise error(f"{path} is not a known field", path)
        for key, sub in props.items():
            if key in value:
                validate(sub, value[key], f"{field}.{key}" if field else key, error)
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise error(f"{name} must be a list", field)
        if len(value) < schema.get("minItems", 0):
            raise error(f"{name} needs at least {schema['minItems']} item(s)", field)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise error(f"{name} has more than {schema['maxItems']} items", field)
        items = schema.get("items")
        if items:
            for i, item in enumerate(value):
                validate(items, item, f"{name}[{i}]", error)
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{name} must be an integer", field)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{name} must be a number", field)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise error(f"{name} must be true or false", field)
    elif kind == "string":
        if not isinstance(value, str):
            raise error(f"{name} must be {_describe(schema)}", field)
        if len(value) < schema.get("minLength", 0):
            raise error(
                f"{name} must not be empty"
                if schema.get("minLength") == 1
                else f"{name} is too short",
                field,
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise error(f"{name} is longer than {schema['maxLength']} characters", field)
        if "\x00" in value:
            raise error(f"{name} contains a NUL character", field)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is not text
            raise error(f"{name} is not valid Unicode text", field) from None
        if not _check_format(schema.get("format"), value):
            raise error(f"{name} must be {_describe(schema)}", field)
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise error(f"{name} has the wrong form", field)
    if "enum" in schema and value not in schema["enum"]:
        raise error(f"{name} must be {_describe(schema)}", field)
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise error(f"{name} must be at least {schema['minimum']}", field)
        if "maximum" in schema and value > schema["maximum"]:
            raise error(f"{name} must be at most {schema['maximum']}", field)
    return value


def parse_param(schema: Mapping[str, Any], raw: str, name: str) -> Any:
    """A query or path parameter from its text; InvalidParameter naming it if it does not fit."""
    kind = schema.get("type", "string")
    value: Any = raw
    if kind == "integer":
        if not _INT_RE.fullmatch(raw.strip()):
            raise InvalidParameter(f"{name} must be an integer", name)
        value = int(raw)
    elif kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise InvalidParameter(f"{name} must be a number", name) from None
    elif kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            value = True
        elif lowered in _FALSE:
            value = False
        else:
            raise InvalidParameter(f"{name} must be true or false", name)
    return validate(schema, value, name, InvalidParameter)
