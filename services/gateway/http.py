"""The gateway's HTTP entrypoint: every route runs the same pipeline.

``@route("list_organizations")`` on a GatewayService method registers the route of that name
from routes.py. For each request, before the handler (the worker) runs:

1. a request id (returned as ``X-Request-Id``; it is also the audit record's request id);
2. the client's address (REMOTE_ADDR, or X-Forwarded-For behind a trusted proxy);
3. anonymiser networks refused (403), per-client rate limit (429);
4. the body read with a size limit (413);
5. the bearer token checked (401), per-account rate limit (429), the role checked (403),
   staff kept to their own organisation (403);
6. path, query and body checked against the route's schemas (400 naming the field);
7. Idempotency-Key: a repeat gets the first answer.

The handler gets a :class:`Call` and returns plain data (JSON, or CSV when asked), or a
werkzeug Response. Any exception becomes the error body through errors.map_exception. Last, one
audit record is published with confirms; if that fails the answer is 503 AUDIT_UNAVAILABLE.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from eventlet.event import Event
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from services.common.config import settings
from services.common.logs import request_id_var
from services.common.metrics import HTTP_REQUESTS, HTTP_SECONDS
from services.gateway import auth, csvout, pages
from services.gateway.abuse import AbuseGuard
from services.gateway.audit_publisher import (
    AuditPublisher,
    body_digest,
    build_record,
    server_fingerprint,
)
from services.gateway.errors import (
    AuditUnavailable,
    DomainError,
    Forbidden,
    InvalidJson,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    map_exception,
)
from services.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from services.gateway.idempotency import IdempotencyStore, check_key, request_hash
from services.gateway.routes import BODIES, BY_NAME, DEFAULT_PAGE_SIZE, ROUTES, Route
from services.gateway.validation import parse_param, validate

log = logging.getLogger(__name__)
access_log = logging.getLogger("kezek.access")

DEFAULT_MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json; charset=utf-8"
CSV_TYPE = "text/csv; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
NON_FILTERS = ("page", "page_size", "format")


@dataclass
class Client:
    ip: str
    remote_addr: str | None
    forwarded_for: str | None
    user_agent: str | None
    accept_language: str | None
    fingerprint: str | None
    server_fingerprint: str


@dataclass
class Call:
    """What a handler gets: the checked request and who makes it."""

    route: Route
    request: Request
    request_id: str
    client: Client
    settings: dict[str, Any]
    raw_body: bytes = b""
    actor: dict[str, Any] | None = None
    path: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    idempotency_key: str | None = None
    # a handler may say more precisely who acted / what was acted on (sign-in: the phone)
    audit_actor: str | None = None
    audit_target: str | None = None
    error_code: str | None = None
    # set by a handler that answered from the public cache (cache.py): seconds
    cache_age: float | None = None
    cache_max_age: float = 0.0

    def cached(self, hit) -> Any:
        """Note a cache.Hit for the response headers; its value."""
        self.cache_age, self.cache_max_age = hit.age, hit.max_age
        return hit.value

    @property
    def filters(self) -> dict[str, Any]:
        return {k: v for k, v in self.query.items() if k not in NON_FILTERS}

    @property
    def page(self) -> int:
        return int(self.query.get("page", 1))

    @property
    def page_size(self) -> int:
        return int(self.query.get("page_size", DEFAULT_PAGE_SIZE))

    @property
    def scoped_idempotency_key(self) -> str | None:
        """The key as passed to services: prefixed by the actor, so keys never collide."""
        if self.idempotency_key is None:
            return None
        who = self.actor["id"] if self.actor else "anonymous"
        return "gw-" + hashlib.sha256(f"{who}|{self.idempotency_key}".encode()).hexdigest()


def wants_csv(call: Call) -> bool:
    if not call.route.csv:
        return False
    fmt = call.query.get("format")
    if fmt is not None:
        return fmt == "csv"
    best = call.request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def prefers_html(request: Request) -> bool:
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def audit_target(route: Route, values: dict[str, Any]) -> str | None:
    """The resource a request acts on, from its path: 'organizations/7/groups/31'."""
    segments = route.path.split("/")[3:]  # after /api/v1
    last = max((i for i, s in enumerate(segments) if s.startswith("{")), default=None)
    if last is None:
        return None
    out = []
    for segment in segments[: last + 1]:
        if segment.startswith("{"):
            out.append(str(values.get(segment[1:-1], ""))[:200])
        else:
            out.append(segment)
    return "/".join(out)


_API_MAP = Map(
    [
        Rule(r.rule, methods=r.method.split(","), endpoint=r.name)
        for r in ROUTES
        if r.kind != "fallback"
    ]
)


def allowed_methods(path: str) -> list[str] | None:
    """The methods other routes allow on this path (None: no route has the path)."""
    adapter = _API_MAP.bind("gateway", "/")
    try:
        adapter.match(path, method="__none__")
    except WerkzeugMethodNotAllowed as exc:
        return sorted(exc.valid_methods or [])
    except WerkzeugNotFound:
        return None
    except Exception:  # noqa: BLE001 - e.g. a redirect: treat as unknown
        return None
    return None


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}".split("\n")[0][:300]) from None


def encode_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def json_response(data: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(data), status=status, headers=headers, content_type=JSON_TYPE)


class JsonPage:
    """An answer kept in the public cache with its JSON body, encoded once for everyone who
    gets it from there (a queue page is about 20 KB of text); ``value`` for the CSV export."""

    __slots__ = ("value", "_body")

    def __init__(self, value: Any):
        self.value, self._body = value, None

    @property
    def body(self) -> str:
        if self._body is None:
            self._body = encode_json(self.value)
        return self._body


class ApiRoute(HttpRequestHandler):
    """A nameko HTTP entrypoint for one route of the table, with the pipeline above."""

    guard = AbuseGuard()
    audit = AuditPublisher()
    idempotency = IdempotencyStore()

    def __init__(self, name: str, **kwargs):
        route = BY_NAME[name]
        kwargs.setdefault("expected_exceptions", (DomainError,))
        super().__init__(route.method, route.rule, **kwargs)
        self.route = route

    def setup(self) -> None:
        super().setup()
        self.settings = settings(self.container.config)
        self.max_body = int(self.settings.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        self.token_secret = str(self.settings.get("TOKEN_SECRET") or "")
        if not self.token_secret:
            raise RuntimeError("KEZEK.TOKEN_SECRET must be set")

    # -- the pipeline -----------------------------------------------------------------------------
    def handle_request(self, request: Request) -> Response:
        request.shallow = False
        started = time.monotonic()
        route = self.route
        call = Call(route, request, str(uuid.uuid4()), self._client(request), self.settings)
        request_id_var.set(call.request_id)  # on every log line written for this request
        try:
            response = self._serve(call)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error body
            response = self._error_response(call, exc)
        if route.audited:
            response = self._record(call, response)
        response.headers["X-Request-Id"] = call.request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if call.actor is not None or route.tag == "sign-in":
            response.headers["Cache-Control"] = "no-store"
        elif call.cache_max_age and response.status_code == 200:
            # a public page this process keeps a moment (cache.py): say how long and how old
            response.headers["Cache-Control"] = f"public, max-age={call.cache_max_age:g}"
            response.headers["Age"] = str(int(call.cache_age or 0))
        HTTP_REQUESTS.labels(route.label, str(response.status_code)).inc()
        elapsed = time.monotonic() - started
        HTTP_SECONDS.labels(route.label).observe(elapsed)
        # the access log; probes and scrapes (ops routes) only at debug level
        access_log.log(logging.DEBUG if route.kind == "ops" else logging.INFO,
                       "%s %s %s", request.method, route.label, response.status_code,
                       extra={"fields": {"method": request.method, "route": route.label,
                                         "status": response.status_code,
                                         "duration_ms": round(elapsed * 1000, 1)}})
        return response

    def _client(self, request: Request) -> Client:
        headers = request.headers
        remote = request.environ.get("REMOTE_ADDR")
        forwarded = headers.get("X-Forwarded-For")
        # the page script sends it as a header with API calls and keeps it in a cookie, which
        # is all a plain page request (a link, a form) can carry
        fingerprint = headers.get("X-Device-Fingerprint") or request.cookies.get(
            pages.FINGERPRINT_COOKIE
        )
        return Client(
            ip=self.guard.client_address(remote, forwarded),
            remote_addr=remote,
            forwarded_for=forwarded,
            user_agent=headers.get("User-Agent"),
            accept_language=headers.get("Accept-Language"),
            fingerprint=fingerprint[:256] if fingerprint else None,
            server_fingerprint=server_fingerprint(headers),
        )

    def _serve(self, call: Call) -> Response:
        route, request = self.route, call.request
        if route.kind in ("ops", "static"):
            return self._render(call, self._run(call))
        self.guard.check_network(call.client.ip)
        self.guard.check_client(call.client.ip, call.client.fingerprint)
        call.raw_body = self._read_body(request)
        self._authenticate(call)
        if call.actor is not None:
            self.guard.check_account(call.actor["id"])
        self._authorize(call)
        call.path = {
            p.name: parse_param(p.schema, str(request.path_values.get(p.name, "")), p.name)
            for p in route.path_params
        }
        self._check_organization(call)
        call.query = self._parse_query(call)
        if route.body:
            body = parse_json(call.raw_body) if call.raw_body.strip() else None
            call.body = validate(self._body_schema(), body)
        if route.mutating:
            call.idempotency_key = check_key(request.headers.get(IDEMPOTENCY_HEADER))
            # no change may be made that could then not be recorded
            self.audit.ensure_ready()
        if call.idempotency_key is None:
            return self._handle(call)
        scope, key = call.actor["id"] if call.actor else "anonymous", call.idempotency_key
        stored = self.idempotency.begin(
            scope, key, request_hash(request.method, request.path, call.raw_body)
        )
        if stored is not None:
            response = Response(stored.body, status=stored.status, content_type=JSON_TYPE)
            response.headers["Idempotent-Replayed"] = "true"
            if stored.status >= 400:
                call.error_code = _code_of(stored.body)
            return response
        try:
            response = self._handle(call)
        except BaseException:
            self.idempotency.release(scope, key)
            raise
        try:
            self.idempotency.finish(
                scope, key, response.status_code, response.get_data(as_text=True)
            )
        except Exception:  # noqa: BLE001 - the answer stands; only a retry loses the replay
            log.exception("could not store the answer for an idempotency key")
        return response

    def _handle(self, call: Call) -> Response:
        try:
            return self._render(call, self._run(call))
        except Exception as exc:  # noqa: BLE001
            return self._error_response(call, exc)

    def _run(self, call: Call) -> Any:
        """Run the handler in a nameko worker; its result, or its exception raised here."""
        event = Event()
        self.container.spawn_worker(
            # nameko sends context data as nameko.* headers on every RPC call the handler makes
            self, (call,), {}, context_data={"request_id": call.request_id},
            handle_result=partial(self.handle_result, event)
        )
        result = event.wait()
        if isinstance(result, Refused):
            raise result.error
        return result

    # -- steps ---------------------------------------------------------------------------------
    def _read_body(self, request: Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise PayloadTooLarge(f"the body may be at most {self.max_body} bytes")
        data = request.stream.read(self.max_body + 1)
        if len(data) > self.max_body:
            raise PayloadTooLarge(f"the body may be at most {self.max_body} bytes")
        return data

    def _authenticate(self, call: Call) -> None:
        try:
            token = auth.bearer_token(call.request.headers.get("Authorization"))
            if token is None:
                return
            claims = auth.verify_token(self.token_secret, token)
        except Unauthorized:
            if self.route.roles:
                raise
            return  # a stale token on a public page is no reason to refuse a public read
        call.actor = auth.actor_from_claims(claims, call.request_id)

    def _authorize(self, call: Call) -> None:
        roles = self.route.roles
        if not roles:
            return
        if call.actor is None:
            raise Unauthorized("sign in first: POST /api/v1/auth/otp, then /api/v1/auth/token")
        if call.actor["role"] not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}", None, "ROLE_REFUSED")

    def _check_organization(self, call: Call) -> None:
        param = self.route.own_organization
        if param and call.actor and call.actor["role"] == "staff":
            if call.actor.get("organization_id") != call.path.get(param):
                raise Forbidden(
                    "staff may act only for their own organisation", param, "NOT_OWN_ORGANIZATION"
                )

    def _parse_query(self, call: Call) -> dict[str, Any]:
        args = call.request.args
        out: dict[str, Any] = {}
        for p in self.route.query_params:
            if p.name in args:
                out[p.name] = parse_param(p.schema, args.get(p.name, ""), p.name)
            elif p.required:
                raise InvalidParameter(f"{p.name} is required", p.name)
        return out

    def _body_schema(self) -> dict[str, Any]:
        return BODIES[self.route.body]

    # -- answers -------------------------------------------------------------------------------
    def _render(self, call: Call, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        route = self.route
        page = result if isinstance(result, JsonPage) else None
        if page is not None:
            result = page.value
        if wants_csv(call):
            if route.name == "statistics" and isinstance(result, dict):
                columns, rows = route.csv_columns, csvout.statistics_rows(result)
            elif isinstance(result, dict) and isinstance(result.get("items"), list):
                columns = result.get("columns") or route.csv_columns
                rows = result["items"]
            else:
                columns, rows = route.csv_columns, [result]
            response = Response(
                csvout.render(columns, rows), status=route.status, content_type=CSV_TYPE
            )
            response.headers["Content-Disposition"] = f'attachment; filename="{route.name}.csv"'
            if isinstance(result, dict) and "total" in result:
                response.headers["X-Total-Count"] = str(result["total"])
            return response
        if page is not None:
            return Response(page.body, status=route.status, content_type=JSON_TYPE)
        return json_response(result, route.status)

    def _error_response(self, call: Call, exc: BaseException) -> Response:
        status, body, headers = map_exception(exc)
        code = body["error"]["code"]
        call.error_code = code
        if code == "ANONYMIZER_REFUSED" and prefers_html(call.request):
            page = pages.refusal(status, code, body["error"]["message"], call.request_id)
            return Response(page, status=status, headers=headers, content_type=HTML_TYPE)
        if self.route.kind == "page" or (
            self.route.kind == "fallback"
            and prefers_html(call.request)
            and not call.request.path.startswith("/api/")
        ):
            return self._error_page(call, status, body["error"], headers)
        return json_response(body, status, headers)

    def _error_page(self, call: Call, status: int, error: dict, headers: dict) -> Response:
        """An error on a web page (or a browser's unknown address) as a page in its language."""
        request = call.request
        try:
            lang, _ = pages.choose_lang(request.args, request.cookies)
            ctx = pages.PageContext(lang, request.path, request.args.to_dict())
            page = pages.error_page(ctx, status, error["code"], error["message"], call.request_id)
        except Exception:  # noqa: BLE001 - the plain page needs nothing that could fail
            log.exception("error page could not be rendered")
            page = pages.refusal(status, error["code"], error["message"], call.request_id)
        response = Response(page, status=status, headers=headers, content_type=HTML_TYPE)
        response.headers.update(pages.SECURITY_HEADERS)
        return response

    def _record(self, call: Call, response: Response) -> Response:
        """Publish the audit record; a 503 instead of the answer if the broker does not
        confirm it."""
        route, request = self.route, call.request
        outcome = str(response.status_code)
        if call.error_code:
            outcome += f" {call.error_code}"
        if route.kind == "fallback":
            action, target = f"{request.method} (unmatched)", request.path[:300]
        else:
            action = f"{request.method} {route.path}"
            target = call.audit_target or audit_target(route, request.path_values)
        record = build_record(
            request_id=call.request_id,
            actor=call.audit_actor or (call.actor["id"] if call.actor else "anonymous"),
            role=call.actor["role"] if call.actor else "public",
            action=action,
            target=target,
            outcome=outcome,
            ip=call.client.ip,
            forwarded_for=call.client.forwarded_for,
            user_agent=call.client.user_agent,
            accept_language=call.client.accept_language,
            fingerprint=call.client.fingerprint,
            server_fingerprint=call.client.server_fingerprint,
            body_digest=body_digest(call.raw_body),
        )
        try:
            self.audit.publish(record)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the request went unrecorded
            if not isinstance(exc, AuditUnavailable):
                log.exception("audit record %s could not be published", record["id"])
                exc = AuditUnavailable("the audit log is unavailable; try again later")
            call.error_code = exc.code
            status, body, headers = map_exception(exc)
            if route.kind == "page":
                return self._error_page(call, status, body["error"], headers)
            return json_response(body, status, headers)
        return response


def _code_of(body: str) -> str | None:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def not_found(call: Call) -> None:
    """The answer for a path no route serves: 405 when another method would do, else 404."""
    allowed = allowed_methods(call.request.path)
    if allowed:
        raise MethodNotAllowed(f"{call.request.method} is not allowed here", allowed)
    raise NotFound(f"no such path: {call.request.path[:200]}", None, "NO_SUCH_PATH")


@dataclass(frozen=True)
class Refused:
    """A handler's domain error carried out of the worker as a value: an expected answer
    (404, 409...) is not a worker failure to log with a traceback."""

    error: DomainError


def route(name: str, **kwargs):
    """``@route("list_organizations")``: the handler of that route of the table."""

    def decorate(fn):
        @functools.wraps(fn)
        def handler(self, call: Call):
            try:
                return fn(self, call)
            except DomainError as exc:
                return Refused(exc)

        return ApiRoute.decorator(name, **kwargs)(handler)

    return decorate
