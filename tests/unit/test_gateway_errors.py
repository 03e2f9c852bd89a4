"""The one exception -> HTTP map of the gateway."""

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.exceptions import MethodNotFound, RemoteError, UnknownService, deserialize, serialize
from sqlalchemy.exc import OperationalError

from services.common import errors as common
from services.gateway import errors


@pytest.mark.parametrize(
    "exc,status,code",
    [
        (common.BadInput("bad", "child.iin"), 400, "INVALID_INPUT"),
        (common.Unauthorized("who?"), 401, "NOT_SIGNED_IN"),
        (common.Forbidden("no"), 403, "FORBIDDEN"),
        (common.NotFound("none", "application_number"), 404, "NOT_FOUND"),
        (common.Conflict("already withdrawn", code="ALREADY_WITHDRAWN"), 409, "ALREADY_WITHDRAWN"),
        (common.RuleRefused("check digit", "child.iin", "IIN_INVALID"), 422, "IIN_INVALID"),
        (errors.InvalidJson("nope"), 400, "INVALID_JSON"),
        (
            errors.InvalidParameter("page_size must be at most 500", "page_size"),
            400,
            "INVALID_PARAMETER",
        ),
        (errors.PayloadTooLarge("big"), 413, "PAYLOAD_TOO_LARGE"),
        (errors.AnonymizerRefused("vpn"), 403, "ANONYMIZER_REFUSED"),
        (errors.AuditUnavailable("down"), 503, "AUDIT_UNAVAILABLE"),
        (errors.UpstreamTimeout("slow"), 504, "UPSTREAM_TIMEOUT"),
        (errors.IdempotencyKeyReused("other", "Idempotency-Key"), 422, "IDEMPOTENCY_KEY_REUSED"),
        (UnknownService("queue"), 503, "UPSTREAM_UNAVAILABLE"),
        (MethodNotFound("nope"), 502, "UPSTREAM_ERROR"),
        (RemoteError("KeyError", "'x'"), 502, "UPSTREAM_ERROR"),
        (
            OperationalError("SELECT 1", {}, Exception("connection refused")),
            503,
            "DATABASE_UNAVAILABLE",
        ),
        (ConnectionRefusedError(111, "refused"), 503, "UPSTREAM_UNAVAILABLE"),
        # an RPC request published while the broker is down (kombu wraps the socket error)
        (KombuOperationalError("[Errno 111] ECONNREFUSED"), 503, "UPSTREAM_UNAVAILABLE"),
        (KeyError("bug"), 500, "INTERNAL_ERROR"),
    ],
)
def test_status_code_and_error_shape(exc, status, code):
    got_status, body, _ = errors.map_exception(exc)
    assert got_status == status
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_the_field_is_passed_on():
    _, body, _ = errors.map_exception(common.BadInput("must be a date", "child.birth_date"))
    assert body["error"]["field"] == "child.birth_date"


def test_an_internal_error_does_not_leak_its_details():
    _, body, _ = errors.map_exception(RuntimeError("password=hunter2"))
    assert "hunter2" not in body["error"]["message"]


def test_rate_limits_say_when_to_come_back():
    status, body, headers = errors.map_exception(errors.RateLimited("slow down", 1.2))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "RATE_LIMITED", "2")
    status, body, headers = errors.map_exception(errors.TemporarilyBlocked("blocked", 600))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (
        429,
        "TEMPORARILY_BLOCKED",
        "600",
    )


def test_method_not_allowed_names_the_allowed_methods():
    status, _, headers = errors.map_exception(errors.MethodNotAllowed("no", ["GET", "POST"]))
    assert status == 405 and headers["Allow"] == "GET, POST"


def test_domain_errors_keep_code_and_field_across_rpc():
    """What a service raises is what the gateway maps (nameko serialises exception args)."""
    for exc in (
        common.NotFound("no application A1", "application_number", "APP_GONE"),
        common.BadInput("nothing to change"),
    ):
        back = deserialize(serialize(exc))
        assert type(back) is type(exc)
        assert errors.map_exception(back) == errors.map_exception(exc)
    assert deserialize(serialize(common.BadInput("x"))).field is None
    assert deserialize(serialize(common.BadInput("x"))).code == "INVALID_INPUT"
