"""The entrypoints of the web pages (mixed into GatewayService; HTML in pages.py).

Each page is a route of the table (routes.py, kind "page"), so it runs the same pipeline as the
API: request id, rate limit, one audit record with the device fingerprint (from the ``kezek_fp``
cookie the page script sets). Public registries are rendered here from the same registry RPC
calls the API makes; the signed-in pages are forms and labels that static/kezek.js fills from
the JSON API.

Query parameters of a page are read leniently: a value that does not parse is dropped and
named on the page instead of answering 400, so a hand-edited link still shows something.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from services.gateway import pages
from services.gateway.errors import BadInput, NotFound
from services.gateway.http import HTML_TYPE, Call, route
from services.gateway.routes import BY_NAME, NUMBER, ROUTES
from services.gateway.validation import parse_param

PAGE_SIZE = 20
# the actions audit records name ("GET /api/v1/queue/lookup"), offered in the auditor's search
AUDITED_ACTIONS = tuple(
    f"{method} {r.path}"
    for r in ROUTES
    if r.audited and r.kind != "fallback"
    for method in r.method.split(",")
)
YEAR = 365 * 24 * 3600


def context(call: Call) -> tuple[pages.PageContext, bool]:
    request = call.request
    lang, remember = pages.choose_lang(request.args, request.cookies)
    return pages.PageContext(lang, request.path, request.args.to_dict()), remember


def html(call: Call, ctx: pages.PageContext, remember: bool, text: str, status: int = 200):
    response = Response(text, status=status, content_type=HTML_TYPE)
    response.headers.update(pages.SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Vary"] = "Cookie"
    if remember:
        response.set_cookie(
            pages.LANG_COOKIE, ctx.lang, max_age=YEAR, path="/", samesite="Lax", httponly=True
        )
    return response


def page_filters(call: Call, api_route: str) -> tuple[dict[str, Any], int, list[str]]:
    """(filters, page, problems) from the query, checked against the API route's parameters."""
    args = call.request.args
    filters: dict[str, Any] = {}
    page = 1
    problems: list[str] = []
    for param in BY_NAME[api_route].query_params:
        raw = args.get(param.name, "").strip()
        if not raw or param.name in ("format", "page_size"):
            continue
        try:
            parsed = parse_param(param.schema, raw, param.name)
        except BadInput as exc:
            problems.append(f"{param.name}: {exc.message}")
            continue
        if param.name == "page":
            page = parsed
        else:
            filters[param.name] = parsed
    return filters, page, problems


class WebPages:
    """Page entrypoints; the service class supplies ``registry`` and ``applications``."""

    registry: Any
    applications: Any

    def _districts(self) -> list[str]:
        return [d["name"] for d in self.registry.list_districts() or [] if d.get("name")]

    def _registry_page(self, call: Call, api_route: str, method: str, render) -> Response:
        ctx, remember = context(call)
        filters, page, problems = page_filters(call, api_route)
        fetch = getattr(self.registry, method)
        try:
            result = fetch(filters, page, PAGE_SIZE)
        except BadInput as exc:  # a filter the registry refuses: show the page without filters
            problems.append(f"{exc.field or ''}: {exc.message}")
            result = fetch({}, 1, PAGE_SIZE)
        return html(call, ctx, remember, render(ctx, result, self._districts(), problems))

    @route("home")
    def home(self, call: Call) -> Response:
        """``GET /`` -> the home page: queue-number lookup and links to the registries."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.home(ctx))

    @route("page_lookup")
    def page_lookup(self, call: Call) -> Response:
        """``GET /queue/lookup?application_number=A000000123`` -> the queue number (05-22)."""
        ctx, remember = context(call)
        number = call.request.args.get("application_number", "").strip() or None
        row, problem, status = None, None, 200
        if number is not None:
            call.audit_target = f"applications/{number[:64]}"
            try:
                number = parse_param(NUMBER, number.upper(), "application_number")
                row = self.registry.queue_lookup(number)
            except BadInput:
                problem, status = ctx.t("m.lookup_help"), 400
            except NotFound:
                problem, status = ctx.t("m.lookup_not_found"), 404
        return html(call, ctx, remember, pages.lookup(ctx, number, row, problem), status)

    @route("page_organizations")
    def page_organizations(self, call: Call) -> Response:
        """``GET /organizations`` -> registry of organisations (05-17)."""
        return self._registry_page(
            call, "list_organizations", "list_organizations", pages.organizations
        )

    @route("page_organization")
    def page_organization(self, call: Call) -> Response:
        """``GET /organizations/7`` -> one organisation with its groups."""
        ctx, remember = context(call)
        org = self.registry.get_organization(call.path["id"])
        return html(call, ctx, remember, pages.organization(ctx, org))

    @route("page_queue")
    def page_queue(self, call: Call) -> Response:
        """``GET /queue`` -> queue registry (05-18)."""
        return self._registry_page(call, "list_queue", "list_queue", pages.queue)

    @route("page_vacancies")
    def page_vacancies(self, call: Call) -> Response:
        """``GET /vacancies`` -> vacant places (05-19); parents may claim one here."""
        return self._registry_page(call, "list_vacancies", "list_vacancies", pages.vacancies)

    @route("page_releases")
    def page_releases(self, call: Call) -> Response:
        """``GET /releases`` -> place-release protocol (05-20)."""
        return self._registry_page(call, "list_releases", "list_releases", pages.releases)

    @route("page_directions")
    def page_directions(self, call: Call) -> Response:
        """``GET /directions`` -> issued-directions protocol (05-21)."""
        return self._registry_page(call, "list_directions", "list_directions", pages.directions)

    @route("page_statistics")
    def page_statistics(self, call: Call) -> Response:
        """``GET /statistics`` -> anonymised statistics (05-23)."""
        ctx, remember = context(call)
        filters, _, problems = page_filters(call, "statistics")
        try:
            result = self.registry.statistics(filters)
        except BadInput as exc:
            problems.append(f"{exc.field or ''}: {exc.message}")
            result = self.registry.statistics({})
        return html(call, ctx, remember,
                    pages.statistics(ctx, result, self._districts(), problems))

    @route("page_sign_in")
    def page_sign_in(self, call: Call) -> Response:
        """``GET /sign-in`` -> phone, then the code from the SMS."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.sign_in(ctx))

    @route("page_apply")
    def page_apply(self, call: Call) -> Response:
        """``GET /apply`` -> the application form (districts and benefit categories filled)."""
        ctx, remember = context(call)
        categories = self.applications.benefit_categories() or []
        return html(call, ctx, remember, pages.apply(ctx, self._districts(), categories))

    @route("page_me")
    def page_me(self, call: Call) -> Response:
        """``GET /me`` -> the parent's applications with queue numbers and actions."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.my_applications(ctx))

    @route("page_feed")
    def page_feed(self, call: Call) -> Response:
        """``GET /me/feed`` -> the parent's event feed."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.feed(ctx))

    @route("page_staff")
    def page_staff(self, call: Call) -> Response:
        """``GET /staff`` -> the organisation's groups: release places, enrol."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.staff(ctx))

    @route("page_officer")
    def page_officer(self, call: Call) -> Response:
        """``GET /officer`` -> verify benefits, stop-list, organisations."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.officer(ctx, self._districts()))

    @route("page_audit")
    def page_audit(self, call: Call) -> Response:
        """``GET /audit`` -> search the action log, verify its chain."""
        ctx, remember = context(call)
        return html(call, ctx, remember, pages.audit(ctx, AUDITED_ACTIONS))

    @route("static")
    def static(self, call: Call) -> Response:
        """``GET /static/kezek.js`` -> the page script and stylesheet (not audited)."""
        found = pages.static_file(str(call.request.path_values.get("asset", "")))
        if found is None:
            raise NotFound("no such file", None, "NO_SUCH_PATH")
        data, content_type, etag = found
        response = Response(data, content_type=content_type)
        response.set_etag(etag)
        # the pages link /static/x?v=<hash>: a changed file gets a new address
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response.make_conditional(call.request)
