"""The web pages in a real browser: Debian's headless Chromium on a 360-px-wide screen, against
the whole system (the ``system`` fixture).

An officer adds an organisation and a group on the officer page; a parent signs in with the code
from the SMS outbox, files an application and sees the queue number; the organisation's staff
release a place; the parent sees the direction in the feed; an auditor finds the parent's
actions by the parent's device fingerprint and verifies the log. Every page is photographed at
360 px into test-artifacts/screenshots/.

Each person uses a browser context of their own (own storage) and a user agent of their own,
as different phones would: the fingerprint is a hash of the device's properties.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from pathlib import Path

import pytest

from tests.browser.chromium import WIDTH, Chromium, Page
from tests.helpers import wait_for
from tests.system import ROOT, random_phone, valid_iin

SHOTS = ROOT / "test-artifacts" / "screenshots"
ANDROID = "Mozilla/5.0 (Linux; Android 14; {device}) AppleWebKit/537.36 (KHTML, like Gecko) " \
          "Chrome/126.0 Mobile Safari/537.36"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(log_path=tmp_path_factory.mktemp("chromium") / "chromium.log")
    yield chromium
    chromium.close()


class Camera:
    """Screenshots of pages, each checked for script and CSP errors first."""

    def __init__(self):
        self.taken: list[Path] = []

    def __call__(self, page: Page, name: str) -> None:
        assert page.problems() == [], f"{name}: the page reported problems"
        self.taken.append(page.screenshot(SHOTS / f"{name}.png"))


def assert_png_360(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000, path
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    assert width == WIDTH and height >= 600, (path, width, height)


def sign_in(system, page: Page, phone: str, lands_on: str, camera: Camera | None = None) -> None:
    page.goto(system.url("/sign-in"))
    page.fill("#otp-form [name=phone]", phone)
    page.click("#otp-form button[type=submit]")
    page.wait("!document.querySelector('#code-form').hidden", message="the code form")
    page.fill("#code-form [name=code]", system.sms_code(phone))
    if camera:
        camera(page, "sign-in")
    page.click("#code-form button[type=submit]")
    page.wait(f"location.pathname === {json.dumps(lands_on)}", message=f"landing on {lands_on}")
    page.wait_loaded()


def file_application(system, page: Page, org_id: int, district: str, birth: dt.date,
                     child: str, camera: Camera | None = None) -> str:
    """Fill and send the application form; the queue number shown."""
    page.goto(system.url("/apply"))
    page.fill("[name='applicant.iin']", valid_iin(dt.date(1991, 3, 8), "F"))
    page.fill("[name='applicant.full_name']", "Ахметова Гүлнар Серікқызы")
    page.fill("[name='child.iin']", valid_iin(birth, "M"))
    page.fill("[name='child.full_name']", child)
    page.fill("[name='child.birth_date']", birth.isoformat())
    page.fill("[name=language]", "kk")
    page.fill("[name=district]", district)
    page.wait(f"!!document.querySelector('#preferred input[value=\"{org_id}\"]')",
              message="the district's organisations")
    page.check(f"#preferred input[value='{org_id}']")
    page.fill("[name=desired_start]", (dt.date.today() + dt.timedelta(days=90)).isoformat())
    if camera:
        camera(page, "apply-form")
    page.click("#apply-form button[type=submit]")
    page.wait("!!document.querySelector('#filed-queue-number') || "
              "!document.querySelector('#apply-error').hidden", message="the filing answer")
    assert page.evaluate("document.querySelector('#apply-error').hidden"), page.text("#apply-error")
    if camera:
        camera(page, "apply-filed")
    return page.text("#filed-queue-number")


def test_parent_files_staff_release_parent_sees_direction_auditor_finds_it(system, browser):
    camera = Camera()
    tag = uuid.uuid4().hex[:6]
    district = f"Браузер-{tag}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=3 * 365)
    officer_phone, staff_phone, auditor_phone, parent_phone = (random_phone() for _ in range(4))
    system.add_user("officer", officer_phone)
    system.add_user("auditor", auditor_phone)

    # -- the officer adds an organisation and a group -------------------------------------------
    officer = browser.page(ANDROID.format(device=f"officer-{tag}"))
    sign_in(system, officer, officer_phone, "/officer")
    camera(officer, "officer")
    officer.fill("#org-form [name=name]", f"Балабақша «Күншуақ» {tag}")
    officer.fill("#org-form [name=address]", "Алматы, Абай даңғылы 10")
    officer.fill("#org-form [name=district]", district)
    officer.click("#org-form button[type=submit]")
    org_id = int(officer.wait("document.querySelector('#org-form').dataset.created",
                              message="organisation created"))
    officer.fill("#group-form [name=name]", "Ортаңғы топ")
    officer.fill("#group-form [name=birth_year]", birth.year)
    officer.fill("#group-form [name=capacity]", 25)
    officer.fill("#group-form [name=enrolled]", 10)
    officer.click("#group-form button[type=submit]")
    group_id = int(officer.wait("document.querySelector('#group-form').dataset.created",
                                message="group added"))
    assert str(org_id) in officer.text("#officer-result") or str(group_id) in officer.text(
        "#officer-result")
    camera(officer, "officer-organization-added")
    system.add_user("staff", staff_phone, organization_id=org_id)

    # -- the parent: home page, sign-in with the SMS code, the form, the queue number -----------
    parent = browser.page(ANDROID.format(device=f"parent-{tag}"))
    parent.goto(system.url("/"))
    assert parent.evaluate("document.documentElement.lang") == "kk"
    camera(parent, "home")
    sign_in(system, parent, parent_phone, "/me", camera)
    parent.wait("!!document.querySelector('#applications .empty')", message="no applications yet")
    queue_number = file_application(system, parent, org_id, district, birth,
                                    "Ахметов Нұрсұлтан Маратұлы", camera)
    assert queue_number == "1"

    parent.goto(system.url("/me"))
    card = parent.wait("document.querySelector('#applications [data-application]')"
                       "?.dataset.application", message="the application on /me")
    number = card
    assert parent.text(f"[data-application='{number}'] .queue-number") == "1"
    camera(parent, "me")

    parent.goto(system.url(f"/queue/lookup?application_number={number}"))
    assert parent.text("#queue-number") == "1"
    camera(parent, "lookup")

    # -- staff release a place ------------------------------------------------------------------
    staff = browser.page(ANDROID.format(device=f"staff-{tag}"))
    sign_in(system, staff, staff_phone, "/staff")
    staff.wait("document.querySelector('#groups').dataset.loaded", message="the groups")
    camera(staff, "staff")
    staff.fill(f"[data-group-id='{group_id}'] [name=places]", 1)
    staff.click(f"[data-group-id='{group_id}'] form.release button[type=submit]")
    place_id = staff.wait(f"document.querySelector(\"[data-group-id='{group_id}'] .place-id\")"
                          "?.textContent.trim()", message="released place ids")
    assert staff.evaluate("document.querySelector('#staff-error').hidden")
    staff.wait("!!document.querySelector('#org-directions [data-direction]')", timeout=15,
               message="the direction among the organisation's directions")
    camera(staff, "staff-released")

    # -- the parent sees the direction in the feed ----------------------------------------------
    def offered_in_feed():
        parent.goto(system.url("/me/feed"))
        parent.wait("document.querySelector('#feed').dataset.loaded", message="the feed")
        return parent.evaluate(
            f"[...document.querySelectorAll('#feed li[data-kind=offered]')]"
            f".filter(li => li.dataset.application === {json.dumps(number)})"
            f".map(li => li.innerText).join('\\n')")

    feed_text = wait_for(offered_in_feed, timeout=20, interval=1.0, message="offer in the feed")
    camera(parent, "feed")
    parent.goto(system.url("/me"))
    direction = parent.wait(f"document.querySelector(\"[data-application='{number}'] "
                            f".direction\")?.dataset.direction", message="direction on /me")
    assert direction in feed_text
    assert parent.exists(f"[data-application='{number}'] form.decline")
    camera(parent, "me-direction")

    # -- the public registries show it ----------------------------------------------------------
    visitor = browser.page(ANDROID.format(device=f"visitor-{tag}"))
    visitor.goto(system.url(f"/directions?organization_id={org_id}"))
    assert visitor.exists(f"[data-direction='{direction}']")
    camera(visitor, "directions")
    for name, path in [
        ("organizations", f"/organizations?district={district}"),
        ("organization", f"/organizations/{org_id}"),
        ("queue", f"/queue?district={district}"),
        ("vacancies", "/vacancies"),
        ("releases", f"/releases?organization_id={org_id}"),
        ("statistics", f"/statistics?district={district}"),
    ]:
        visitor.goto(system.url(path))
        camera(visitor, name)
    visitor.goto(system.url(f"/releases?organization_id={org_id}"))
    assert "Ортаңғы топ" in visitor.text("main")

    # -- the auditor finds the parent's actions by the parent's fingerprint ---------------------
    fingerprint = parent.evaluate("window.Kezek.fingerprint")
    assert len(fingerprint) == 64
    assert fingerprint != staff.evaluate("window.Kezek.fingerprint")
    auditor = browser.page(ANDROID.format(device=f"auditor-{tag}"))
    sign_in(system, auditor, auditor_phone, "/audit")

    def parent_records():
        auditor.fill("#audit-form [name=fingerprint]", fingerprint)
        auditor.click("#audit-form button[type=submit]")
        auditor.wait("document.querySelector('#audit-results').dataset.loaded !== undefined && "
                     "!document.querySelector('#audit-form').dataset.busy",
                     message="audit search")
        rows = auditor.evaluate("[...document.querySelectorAll('#audit-results li')]"
                                ".map(li => [li.dataset.action, li.dataset.outcome, "
                                "li.dataset.actor])")
        actions = {(a, o.split()[0]) for a, o, _ in rows}
        wanted = {("POST /api/v1/applications", "201"), ("POST /api/v1/auth/token", "200"),
                  ("GET /me", "200"), ("GET /me/feed", "200"), ("GET /api/v1/me/events", "200")}
        return rows if wanted <= actions else None

    rows = wait_for(parent_records, timeout=20, interval=1.0, message="parent's audit records")
    assert {actor for _, _, actor in rows} <= {f"applicant:{parent_phone}", "anonymous"}
    camera(auditor, "audit")

    auditor.fill("#audit-form [name=fingerprint]", "")
    auditor.fill("#audit-form [name=role]", "staff")
    auditor.fill("#audit-form [name=action]",
                 "POST /api/v1/organizations/{id}/groups/{group_id}/releases")
    auditor.click("#audit-form button[type=submit]")
    auditor.wait("!!document.querySelector('#audit-results li[data-outcome^=\"201\"]')",
                 message="the staff's release in the log")
    auditor.click("#verify-chain")
    assert auditor.wait("document.querySelector('#chain-result [data-ok]')?.dataset.ok",
                        message="chain check") == "true"
    camera(auditor, "audit-verified")

    # -- the language switch: Russian, remembered in a cookie -----------------------------------
    parent.goto(system.url("/?lang=ru"))
    assert parent.text("h1") == "Электронная очередь в детский сад"
    parent.goto(system.url(f"/queue/lookup?application_number={number}"))
    assert parent.evaluate("document.documentElement.lang") == "ru"
    assert "Номер в очереди" in parent.text("main")
    camera(parent, "lookup-ru")
    parent.goto(system.url("/me?lang=ru"))
    parent.wait(f"!!document.querySelector(\"[data-application='{number}'] .direction\")",
                message="direction on /me in Russian")
    assert "Выдано" in parent.text(f"[data-application='{number}'] .direction")
    camera(parent, "me-ru")

    for path in camera.taken:
        assert_png_360(path)
    assert len(camera.taken) >= 20


def organization_with_group(system, officer, district: str, birth: dt.date, name: str) -> tuple:
    r = officer.post(system.url("/api/v1/organizations"), json={
        "name": name, "address": "Алматы, Төле би 5", "district": district,
        "ownership": "private", "kind": "nursery", "languages": ["kk"], "monthly_fee_kzt": 0})
    assert r.status_code == 201, r.text
    org_id = r.json()["id"]
    r = officer.post(system.url(f"/api/v1/organizations/{org_id}/groups"), json={
        "name": "Кіші топ", "group_type": "general", "birth_year": birth.year, "language": "kk",
        "capacity": 20})
    assert r.status_code == 201, r.text
    return org_id, r.json()["id"]


def test_parent_claims_a_vacancy_postpones_resumes_and_withdraws(system, browser):
    tag = uuid.uuid4().hex[:6]
    district = f"Браузер-{tag}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=2 * 365)
    officer_phone, staff_phone, parent_phone = random_phone(), random_phone(), random_phone()
    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone)["session"]
    chosen, _ = organization_with_group(system, officer, district, birth, f"Бөбекжай {tag}")
    other, other_group = organization_with_group(system, officer, district, birth,
                                                 f"Шағын орталық {tag}")

    camera = Camera()
    parent = browser.page(ANDROID.format(device=f"parent2-{tag}"))
    sign_in(system, parent, parent_phone, "/me")
    assert file_application(system, parent, chosen, district, birth, "Бекова Аружан") == "1"
    parent.goto(system.url("/me"))
    number = parent.wait("document.querySelector('#applications [data-application]')"
                         "?.dataset.application", message="the application")
    card = f"[data-application='{number}']"

    # a place of an organisation nobody chose becomes a public vacancy at once; the parent
    # claims it (within the claim window the claim is pooled)
    system.add_user("staff", staff_phone, organization_id=other)
    staff = system.sign_in(staff_phone)["session"]
    r = staff.post(system.url(f"/api/v1/organizations/{other}/groups/{other_group}/releases"),
                   json={"places": 1})
    assert r.status_code == 201, r.text
    (place_id,) = r.json()["place_ids"]

    def vacancy_listed():
        parent.goto(system.url(f"/vacancies?organization_id={other}"))
        return parent.exists(f"button.claim[data-place-id='{place_id}']:not([hidden])")

    wait_for(vacancy_listed, timeout=15, interval=1.0, message="the vacancy on /vacancies")
    parent.wait(f"!!document.querySelector(\"#claim-with option[value='{number}']\")",
                message="own applications offered for the claim")
    parent.click(f"button.claim[data-place-id='{place_id}']")
    parent.wait("document.querySelector('#claim-result').innerText.trim() !== ''",
                message="the claim's answer")
    assert "үміткерлердің" in parent.text("#claim-result"), parent.text("#claim-result")
    camera(parent, "vacancies-claimed")

    parent.goto(system.url("/me"))
    parent.wait(f"!!document.querySelector(\"{card} form.postpone\")", message="/me again")

    until = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    parent.fill(f"{card} form.postpone [name=until]", until)
    parent.click(f"{card} form.postpone button")
    parent.wait(f"!!document.querySelector(\"{card} form.resume\")", message="postponed")
    assert "Стоп-парақта" in parent.text(f"{card} h3")
    camera(parent, "me-postponed")

    parent.click(f"{card} form.resume button")
    parent.wait(f"!!document.querySelector(\"{card} form.postpone\")", message="back in queue")
    assert "Кезекте" in parent.text(f"{card} h3")

    parent.click(f"{card} form.withdraw button")  # the confirm() is accepted
    parent.wait(f"!document.querySelector(\"{card} form\") && "
                f"document.querySelector(\"{card} h3\").innerText.includes('Кері қайтарылды')",
                message="withdrawn")
    camera(parent, "me-withdrawn")

    parent.goto(system.url(f"/queue/lookup?application_number={number}"))
    assert parent.exists(".notice.error")  # a withdrawn application is not listed any more
    for path in camera.taken:
        assert_png_360(path)


def test_pages_escape_input_and_answer_errors_as_pages(system, browser):
    page = browser.page()
    page.goto(system.url('/queue/lookup?application_number="><script>window.owned=1</script>'))
    assert page.evaluate("window.owned === undefined")
    assert page.exists(".notice.error")
    assert page.evaluate("document.querySelector('[name=application_number]').value").startswith(
        '">')
    page.goto(system.url("/organizations/999999999"))
    assert page.evaluate("document.documentElement.lang") == "kk"
    assert "404" in page.text("main")
    page.goto(system.url("/no/such/page"))
    assert "404" in page.text("main")
    page.goto(system.url("/me"))  # signed out: sent to sign in, and back afterwards
    page.wait("location.pathname === '/sign-in'", message="redirect to sign-in")
    page.wait_loaded()  # the redirect is done before the sign-in page's script has run
    assert page.evaluate("new URLSearchParams(location.search).get('next')") == "/me"
    # the fallback SHA-256 (pages served over plain http to another host have no SubtleCrypto)
    assert page.evaluate("Kezek.sha256Fallback('abc')") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert page.evaluate("Kezek.sha256Fallback('Кезек ' + 'x'.repeat(100))") == page.evaluate(
        "crypto.subtle.digest('SHA-256', new TextEncoder().encode('Кезек ' + 'x'.repeat(100)))"
        ".then(b => [...new Uint8Array(b)].map(x => x.toString(16).padStart(2, '0')).join(''))")
    assert page.problems() == []


def test_officer_verifies_a_benefit_and_uses_the_stop_list(system, browser):
    tag = uuid.uuid4().hex[:6]
    district = f"Браузер-{tag}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=3 * 365)
    officer_phone, parent_phone = random_phone(), random_phone()
    system.add_user("officer", officer_phone)
    org_id, _ = organization_with_group(system, system.sign_in(officer_phone)["session"],
                                        district, birth, f"Балабақша {tag}")
    parent = system.sign_in(parent_phone, f"parent3-{tag}")["session"]
    r = parent.post(system.url("/api/v1/applications"), json={
        "applicant": {"iin": valid_iin(dt.date(1988, 7, 1), "M"), "full_name": "Омаров Ерлан",
                      "phone": parent_phone},
        "child": {"iin": valid_iin(birth, "F"), "full_name": "Омарова Айым",
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": [org_id], "desired_start": "2030-09-01",
        "benefit": {"category": "large_families", "document": "Анықтама №4512"}})
    assert r.status_code == 201, r.text
    number = r.json()["application_number"]

    camera = Camera()
    officer = browser.page(ANDROID.format(device=f"officer3-{tag}"))
    sign_in(system, officer, officer_phone, "/officer")
    officer.fill("#benefit-load [name=number]", number)
    officer.click("#benefit-load button")
    officer.wait("!document.querySelector('#benefit-form').hidden", message="the benefit claim")
    assert "Анықтама №4512" in officer.text("#benefit-view")
    officer.fill("#benefit-form [name=note]", "Құжат тексерілді")
    officer.click("#benefit-form button[value=true]")
    officer.wait("document.querySelector('#benefit-form').hidden", message="benefit verified")
    assert "Расталды" in officer.text("#benefit-view")
    camera(officer, "officer-benefit-verified")

    officer.fill("#stop-form [name=number]", number)
    officer.fill("#stop-form [name=reason]", "documents_check")
    officer.click("#stop-form button[value=enter]")
    officer.wait("document.querySelector('#officer-result').innerText.includes('Стоп-парақта')",
                 message="on the stop-list")
    officer.click("#stop-form button[value=exit]")
    officer.wait("document.querySelector('#officer-result').innerText.includes('Кезекте')",
                 message="back in the queue")
    assert officer.evaluate("document.querySelector('#officer-error').hidden")
    camera(officer, "officer-stop-list")
