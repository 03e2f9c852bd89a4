"""Typed domain errors with stable codes.

They cross RPC intact (registered with nameko's ``deserialize_to_instance``), so the gateway
catches the same class a service raised and maps it to an HTTP status in one place.
"""

from __future__ import annotations

from nameko.exceptions import deserialize_to_instance


@deserialize_to_instance
class DomainError(Exception):
    status = 400
    default_code = "BAD_REQUEST"

    def __init__(self, message: str, field: str | None = None, code: str | None = None):
        self.message = message
        # nameko sends exception args through str(): None would come back as the text "None",
        # so no field travels as "" and the code is resolved before it travels
        self.field = field or None
        self.code = code or self.default_code
        super().__init__(message, self.field or "", self.code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" (field {self.field})" if self.field else "")

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


@deserialize_to_instance
class BadInput(DomainError):
    """400: the request is malformed or a field is invalid."""

    status = 400
    default_code = "INVALID_INPUT"


@deserialize_to_instance
class Unauthorized(DomainError):
    status = 401
    default_code = "NOT_SIGNED_IN"


@deserialize_to_instance
class Forbidden(DomainError):
    status = 403
    default_code = "FORBIDDEN"


@deserialize_to_instance
class NotFound(DomainError):
    status = 404
    default_code = "NOT_FOUND"


@deserialize_to_instance
class Conflict(DomainError):
    """409: the thing is not in a state that allows this (e.g. already withdrawn)."""

    status = 409
    default_code = "CONFLICT"


@deserialize_to_instance
class RuleRefused(DomainError):
    """422: well-formed, but a rule of domain.md refuses it (e.g. IIN check digit)."""

    status = 422
    default_code = "RULE_REFUSED"


@deserialize_to_instance
class TooManyRequests(DomainError):
    status = 429
    default_code = "RATE_LIMITED"


@deserialize_to_instance
class UpstreamTimeout(DomainError):
    """504: another service did not answer an RPC call within RPC_TIMEOUT_SECONDS."""

    status = 504
    default_code = "UPSTREAM_TIMEOUT"


DOMAIN_ERRORS = (DomainError,)
