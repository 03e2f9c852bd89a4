"""The one map from exceptions to HTTP answers.

Services raise ``services.common.errors`` classes; they cross RPC as the same class and carry
their own status, code and field. The gateway adds its own HTTP-level errors below (same base
class, so they map the same way) and maps what is not a domain error here, and only here.
Every error body has the shape ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import logging
import math

from amqp.exceptions import RecoverableConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.exceptions import BadRequest as NamekoBadRequest
from nameko.exceptions import RemoteError, UnknownService
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from services.common.errors import (  # noqa: F401 - re-exported for the gateway's modules
    BadInput,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    RuleRefused,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger(__name__)


# -- the gateway's own errors (HTTP level; never raised by a service) -----------------------------
class InvalidJson(BadInput):
    default_code = "INVALID_JSON"


class InvalidParameter(BadInput):
    """A query or path parameter of the wrong type or out of bounds."""

    default_code = "INVALID_PARAMETER"


class PayloadTooLarge(DomainError):
    status = 413
    default_code = "PAYLOAD_TOO_LARGE"


class MethodNotAllowed(DomainError):
    status = 405
    default_code = "METHOD_NOT_ALLOWED"

    def __init__(self, message: str, allowed: list[str]):
        super().__init__(message)
        self.allowed = allowed


class RateLimited(TooManyRequests):
    default_code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float, code: str | None = None):
        super().__init__(message, None, code)
        self.retry_after = retry_after


class TemporarilyBlocked(RateLimited):
    default_code = "TEMPORARILY_BLOCKED"


class AnonymizerRefused(Forbidden):
    default_code = "ANONYMIZER_REFUSED"


class IdempotencyKeyReused(DomainError):
    status = 422
    default_code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInProgress(Conflict):
    default_code = "IDEMPOTENCY_IN_PROGRESS"


class AuditUnavailable(DomainError):
    status = 503
    default_code = "AUDIT_UNAVAILABLE"


class UpstreamTimeout(DomainError):
    status = 504
    default_code = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(DomainError):
    status = 503
    default_code = "UPSTREAM_UNAVAILABLE"


# -- exceptions that are not DomainErrors ---------------------------------------------------------
# (class, status, code, message shown to the client). Order matters: first match wins.
FOREIGN_ERRORS: list[tuple[type[BaseException], int, str, str]] = [
    (UnknownService, 503, "UPSTREAM_UNAVAILABLE", "a service needed for this is not running"),
    (SQLAlchemyOperationalError, 503, "DATABASE_UNAVAILABLE", "the database cannot be reached"),
    (SQLAlchemyInterfaceError, 503, "DATABASE_UNAVAILABLE", "the database cannot be reached"),
    # the broker went away under an RPC call (kombu/amqp connection errors are OSErrors)
    (
        RecoverableConnectionError,
        503,
        "UPSTREAM_UNAVAILABLE",
        "the message broker cannot be reached",
    ),
    (ConnectionError, 503, "UPSTREAM_UNAVAILABLE", "the message broker cannot be reached"),
    # kombu re-raises socket errors of a publish (an RPC request) as its own OperationalError
    (KombuOperationalError, 503, "UPSTREAM_UNAVAILABLE", "the message broker cannot be reached"),
    # MethodNotFound, IncorrectSignature: the gateway and a service disagree on the contract
    (NamekoBadRequest, 502, "UPSTREAM_ERROR", "a service does not offer the call needed"),
    (RemoteError, 502, "UPSTREAM_ERROR", "a service failed to answer this request"),
]


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def map_exception(exc: BaseException) -> tuple[int, dict, dict[str, str]]:
    """(status, body, extra headers) for any exception raised while serving a request."""
    if isinstance(exc, DomainError):
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        elif isinstance(exc, TooManyRequests):
            headers["Retry-After"] = "60"
        if isinstance(exc, MethodNotAllowed):
            headers["Allow"] = ", ".join(exc.allowed)
        status = int(getattr(exc, "status", 400) or 400)
        if not 400 <= status <= 599:
            status = 400
        return status, error_body(exc.code, exc.message, exc.field), headers
    for cls, status, code, message in FOREIGN_ERRORS:
        if isinstance(exc, cls):
            log.warning("upstream error mapped to %s: %r", status, exc)
            return status, error_body(code, message), {}
    log.error("unexpected error while serving a request", exc_info=exc)
    return 500, error_body("INTERNAL_ERROR", "unexpected error; it has been logged"), {}
