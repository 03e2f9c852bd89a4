"""The web pages' HTML (pages.py) without a server: escaping, both languages, the layout."""

import json
import re

import pytest

from services.gateway import pages
from services.gateway.pages import LABELS, PageContext, Safe, esc, h
from services.gateway.routes import BY_NAME, ROUTES

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def ctx(lang="kk", path="/", **args):
    return PageContext(lang, path, args)


def no_raw_markup(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html


def test_every_label_has_kazakh_and_russian_text():
    for key, (kk, ru) in LABELS.items():
        assert kk.strip() and ru.strip(), key
    # the Kazakh side is written in Kazakh, not left in Russian (a few shared words aside)
    same = [k for k, (kk, ru) in LABELS.items() if kk == ru and not k.startswith(("lang.", "site."))]
    assert len(same) < 10, same


def test_h_escapes_text_and_attributes_but_not_safe_html():
    out = h("a", EVIL, href=EVIL, data_x=1, hidden=True, title=None)
    assert out.startswith('<a href="&quot;&gt;&lt;script&gt;')
    assert ' data-x="1"' in out and " hidden" in out and "title" not in out
    no_raw_markup(out)
    assert h("p", Safe("<b>ok</b>")) == "<p><b>ok</b></p>"
    assert esc(None) == "" and h("input", type="text") == '<input type="text">'


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_registry_pages_escape_what_services_return(lang):
    c = ctx(lang, "/organizations", district=EVIL)
    org = {"id": 7, "name": EVIL, "address": EVIL, "district": EVIL, "ownership": "state",
           "kind": "kindergarten", "languages": ["kk"], "groups": [
               {"id": 1, "name": EVIL, "group_type": "general", "birth_year": 2023,
                "language": "kk", "capacity": 20, "enrolled": 3}]}
    result = {"items": [org], "total": 1, "page": 1, "page_size": 20}
    for html in (
        pages.organizations(c, result, [EVIL], [EVIL]),
        pages.organization(c, org),
        pages.queue(c, {"items": [{"queue_number": 3, "child_name": EVIL, "applicant_name": EVIL,
                                   "application_number": EVIL, "status": "queued",
                                   "stop_list": {"reason": EVIL}}], "total": 1}, [], []),
        pages.lookup(c, EVIL, {"queue_number": 1, "child_name": EVIL}, EVIL),
        pages.statistics(c, {"queues": [{"queue_name": EVIL, "children": {"count": None,
                                                                          "suppressed": True}}]},
                         [], []),
        pages.error_page(c, 404, "NOT_FOUND", EVIL, EVIL),
    ):
        no_raw_markup(html)
        assert f'<html lang="{lang}">' in html


def test_lookup_shows_the_queue_number_and_the_stop_list_in_the_chosen_language():
    row = {"queue_number": 12, "queue_name": "Almaly/general/2023", "status": "stop_listed",
           "application_number": "A000000012", "filed_at": "2027-01-15T04:30:00+00:00",
           "benefit_tier": "none", "stop_list": {"reason": "postponed",
                                                 "exits_at": "2027-08-01T19:00:00+00:00"}}
    kk = pages.lookup(ctx("kk", "/queue/lookup"), "A000000012", row, None)
    ru = pages.lookup(ctx("ru", "/queue/lookup"), "A000000012", row, None)
    assert 'id="queue-number">12<' in kk and 'id="queue-number">12<' in ru
    assert "Стоп-парақта" in kk and "В стоп-листе" in ru
    assert "2027-01-15 09:30" in kk  # Almaty time
    assert "2027-08-02" in ru  # the exit date, local


def test_statistics_hide_small_counts():
    html = pages.statistics(ctx("ru", "/statistics"), {"flows": [
        {"day": "2027-01-15", "filed": {"count": None, "suppressed": True},
         "withdrawn": {"count": 7, "suppressed": False}}]}, [], [])
    assert "меньше 5 (скрыто)" in html and ">7<" in html and "Подано" in html


def test_choose_lang_query_then_cookie_then_kazakh():
    assert pages.choose_lang({}, {}) == ("kk", False)
    assert pages.choose_lang({"lang": "ru"}, {}) == ("ru", True)
    assert pages.choose_lang({"lang": "ru"}, {"kezek_lang": "ru"}) == ("ru", False)
    assert pages.choose_lang({}, {"kezek_lang": "ru"}) == ("ru", False)
    assert pages.choose_lang({"lang": "en"}, {"kezek_lang": "xx"}) == ("kk", False)


def test_layout_switches_language_keeping_the_query_and_embeds_labels_safely():
    html = pages.home(ctx("kk", "/", district="Алмалы"))
    assert 'href="/?district=%D0%90%D0%BB%D0%BC%D0%B0%D0%BB%D1%8B&amp;lang=ru"' in html
    labels = re.search(r'<script type="application/json" id="labels">(.*?)</script>', html,
                       re.S).group(1)
    assert json.loads(labels)["nav.home"] == "Басты бет"
    assert "</" not in labels
    assert re.search(r'<script src="/static/kezek.js\?v=[0-9a-f]{16}" defer>', html)
    assert "<script>" not in html  # no inline script: the CSP allows none


def test_signed_in_pages_name_their_roles():
    assert 'data-roles="applicant"' in pages.my_applications(ctx())
    assert 'data-roles="staff"' in pages.staff(ctx())
    assert 'data-roles="officer"' in pages.officer(ctx(), ["Almaly"])
    assert 'data-roles="auditor"' in pages.audit(ctx(), ["GET /me"])
    assert 'data-roles=""' in pages.sign_in(ctx())


def test_static_files_are_served_by_plain_name_only():
    assert pages.static_file("kezek.js")[1].startswith("text/javascript")
    assert pages.static_file("kezek.css")[1].startswith("text/css")
    for name in ("../pages.py", "..", ".hidden.js", "kezek.py", "nope.js"):
        assert pages.static_file(name) is None


def test_pages_are_routes_kept_out_of_the_api_document():
    from services.gateway import openapi

    paths = openapi.document()["paths"]
    for route in ROUTES:
        if route.kind in ("page", "static"):
            assert route.path not in paths
    assert BY_NAME["page_lookup"].audited and not BY_NAME["static"].audited
