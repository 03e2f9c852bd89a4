"""The registry service against real PostgreSQL and RabbitMQ: master data over RPC, and the
public read models fed by events published straight to the source services' exchanges."""

import copy
import datetime as dt
import itertools
import uuid

import pytest
from nameko.exceptions import deserialize
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.common import contracts
from services.common.amqp import ConfirmingPublisher
from services.common.errors import BadInput, Forbidden, NotFound
from services.registry import domain
from services.registry.service import RegistryService
from tests.helpers import random_name, wait_for

OFFICER = {"id": "officer:1", "role": "officer", "organization_id": None, "request_id": None}
APPLICANT = {"id": "applicant:+77010000000", "role": "applicant", "organization_id": None,
             "request_id": None}
_seq = itertools.count(1)


@pytest.fixture
def registry(start_services, rpc):
    start_services(RegistryService)
    with rpc() as cluster:
        yield cluster.registry


@pytest.fixture
def publish(kezek_config):
    publisher = ConfirmingPublisher(kezek_config["AMQP_URI"])

    def send(*envelopes):
        publisher.publish_batch([(f"{e['source']}.events", e["event_type"], e, {})
                                 for e in envelopes])

    yield send
    publisher.close()


def consumed(handler: str, outcome: str) -> float:
    """Messages a registry handler has finished (acked) with this outcome, in this process."""
    return REGISTRY.get_sample_value(
        "kezek_messages_consumed_total",
        {"service": "registry", "handler": handler, "outcome": outcome}) or 0.0


def handled(handler: str):
    """Snapshot of a handler's acked messages; ``.wait(n)`` waits for n more of them."""
    start = consumed(handler, "ok") + consumed(handler, "duplicate")

    class Waiter:
        @staticmethod
        def wait(n: int):
            wait_for(lambda: consumed(handler, "ok") + consumed(handler, "duplicate") >= start + n,
                     message=f"{n} message(s) handled by {handler}")

    return Waiter


def iso(hours: float = 0.0) -> str:
    base = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.timezone.utc)
    return (base + dt.timedelta(hours=hours)).isoformat()


def entry(number, revision=1, *, queue_name, district, status="queued", tier=None, filed=0.0,
          birth_year=2022, language="kk", queue_type="general", prefs=(), stop_list=None,
          applicant="Ахметов Арман Болатович", child="Ахметова Дана Армановна"):
    return contracts.envelope("queue", "queue_entry_changed", {
        "application_number": number, "revision": revision, "queue_name": queue_name,
        "district": district, "queue_type": queue_type, "birth_year": birth_year,
        "language": language, "status": status, "benefit_tier": tier, "filed_at": iso(filed),
        "stop_list": stop_list, "applicant_name": applicant, "child_name": child,
        "preferred_organizations": list(prefs)})


def place(event_type, place_id, revision, *, org, group, status="priority", released=0.0,
          release_id=None):
    return contracts.envelope("allocation", event_type, {
        "place_id": place_id, "revision": revision, "status": status,
        "organization_id": org["id"], "group_id": group["id"],
        "release_id": release_id or f"R-{place_id}", "birth_year": group["birth_year"],
        "language": group["language"], "group_type": group["group_type"],
        "released_at": iso(released), "priority_starts_at": iso(released),
        "priority_ends_at": iso(released + 24),
        "vacancy_opened_at": iso(released + 24) if status == "vacancy" else None,
        "direction_number": None})


def direction(event_type, number, revision, *, org, group, status="issued", place_id=None,
              application_number="A-secret", issued=0.0):
    return contracts.envelope("allocation", event_type, {
        "number": number, "revision": revision, "status": status, "type": "priority",
        "place_id": place_id or random_name("P"), "organization_id": org["id"],
        "group_id": group["id"], "application_number": application_number,
        "child_name": "Ахметова Дана Армановна", "birth_year": group["birth_year"],
        "language": group["language"], "issued_at": iso(issued), "expires_at": iso(issued + 120),
        "closed_at": iso(issued + 2) if status != "issued" else None, "reason": None})


def new_org(registry, district=None, languages=("kk", "ru"), **groups):
    org = registry.create_organization({
        "name": random_name("Балапан"), "address": "Абай 1", "district": district or
        random_name("district"), "ownership": "state", "kind": "kindergarten",
        "languages": list(languages), "monthly_fee_kzt": 12000}, OFFICER)
    made = [registry.add_group(org["id"], g, OFFICER) for g in groups.values()]
    return org, made


KK_2022 = {"name": "Күншуақ", "group_type": "general", "birth_year": 2022, "language": "kk",
           "capacity": 20, "enrolled": 0}


# -- master data ---------------------------------------------------------------------------------


def test_organisation_master_data(registry, db_engine):
    district = random_name("district")
    org, (group,) = new_org(registry, district, kk=KK_2022)
    assert org["district"] == district and org["groups"] == [] and org["vacancies"] == 0

    shown = registry.get_organization(org["id"])
    assert shown["groups"] == [{**KK_2022, "id": group["id"]}]
    assert shown["group_types"] == {"general": 1}
    assert shown["republished_at"]

    got = registry.get_group(group["id"])
    assert (got["organization_id"], got["organization_name"], got["district"]) == (
        org["id"], org["name"], district)

    updated = registry.update_organization(org["id"], {"monthly_fee_kzt": 15000}, OFFICER)
    assert updated["monthly_fee_kzt"] == 15000 and updated["revision"] == shown["revision"] + 1
    assert {"name": district} in registry.list_districts()

    # every change is a ledger row and an organization_changed event in the registry's outbox
    with db_engine.connect() as conn:
        kinds = conn.execute(text(
            "SELECT kind FROM registry.journal WHERE stream = :s ORDER BY seq"),
            {"s": f"organization:{org['id']}"}).scalars().all()
        events = conn.execute(text(
            "SELECT payload->'data'->>'revision' FROM registry.outbox "
            "WHERE payload->>'event_type' = 'organization_changed' "
            "AND (payload->'data'->>'organization_id')::bigint = :id ORDER BY id"),
            {"id": org["id"]}).scalars().all()
    assert kinds == ["organization_created", "group_added", "organization_updated"]
    assert events == ["1", "2", "3"]

    # the events leave the outbox and count as the department's work in the statistics
    def master_data_changes():
        rows = registry.statistics({"district": district})["departments"]
        return sum(r["master_data_changes"]["count"] for r in rows) == 3
    wait_for(master_data_changes, message="organization_changed counted in the statistics")


def test_master_data_refusals_name_the_field(registry):
    org, _ = new_org(registry, languages=("kk",))
    with pytest.raises(Forbidden):
        registry.create_organization({"name": "x"}, APPLICANT)
    with pytest.raises(Forbidden):
        registry.add_group(org["id"], KK_2022, {"role": "staff", "organization_id": org["id"] + 1})
    with pytest.raises(BadInput) as err:
        registry.create_organization({"name": "x", "address": "y", "district": "z",
                                      "ownership": "public", "kind": "kindergarten",
                                      "languages": ["kk"]}, OFFICER)
    assert err.value.field == "ownership"
    with pytest.raises(BadInput) as err:
        registry.add_group(org["id"], {**KK_2022, "language": "ru"}, OFFICER)
    assert err.value.field == "language"
    with pytest.raises(NotFound):
        registry.get_organization(10**9)
    with pytest.raises(NotFound):
        registry.update_organization(10**9, {"name": "x"}, OFFICER)
    # staff of the organisation may add its own groups
    group = registry.add_group(org["id"], KK_2022, {"role": "staff",
                                                    "organization_id": org["id"]})
    assert registry.get_organization(org["id"])["groups"][0]["id"] == group["id"]
    with pytest.raises(BadInput) as err:
        registry.update_organization(org["id"], {"languages": ["ru"]}, OFFICER)
    assert err.value.field == "languages"


def test_check_preferences(registry):
    org, _ = new_org(registry, kk=KK_2022, special={**KK_2022, "group_type": "special",
                                                     "language": "ru"})
    other, _ = new_org(registry, ru={**KK_2022, "language": "ru"})
    assert registry.check_preferences([org["id"]], 2022, "kk", "general") is None
    assert registry.check_preferences([org["id"]], 2022, "kk", "transfer") is None
    assert registry.check_preferences([org["id"]], 2022, "ru", "special") is None
    assert registry.check_preferences([], 2022, "kk", "general") is None
    for ids, year, lang, qtype, culprit in [
        ([org["id"], other["id"]], 2022, "kk", "general", other["id"]),  # no kk group
        ([org["id"]], 2021, "kk", "general", org["id"]),  # no group of that age
        ([org["id"]], 2022, "kk", "sanatorium", org["id"]),  # no sanatorium group
        ([10**9], 2022, "kk", "general", 10**9),  # no such organisation
    ]:
        with pytest.raises(BadInput) as err:
            registry.check_preferences(ids, year, lang, qtype)
        assert err.value.field == "preferred_organizations"
        assert str(culprit) in err.value.message
    with pytest.raises(BadInput) as err:
        registry.check_preferences([org["id"], other["id"], 10**9, 10**9 + 1], 2022, "kk",
                                   "general")
    assert err.value.field == "preferred_organizations"


def test_organisation_registry_filters(registry):
    district = random_name("district")
    kk, _ = new_org(registry, district, kk=KK_2022)
    ru, _ = new_org(registry, district, ru={**KK_2022, "language": "ru", "birth_year": 2021})
    page = registry.list_organizations({"district": district}, 1, 10)
    assert page["total"] == 2 and {o["id"] for o in page["items"]} == {kk["id"], ru["id"]}
    assert "group_types_summary" in page["columns"] and page["republished_at"]
    only_ru = registry.list_organizations({"district": district, "language": "ru"}, 1, 10)
    assert [o["id"] for o in only_ru["items"]] == [ru["id"]]
    by_age = registry.list_organizations({"district": district, "age_group": "2022"}, 1, 10)
    assert [o["id"] for o in by_age["items"]] == [kk["id"]]
    assert registry.list_organizations({"district": district, "has_vacancies": "true"},
                                       1, 10)["total"] == 0
    with pytest.raises(BadInput) as err:
        registry.list_organizations({"district": district}, 1, 501)
    assert err.value.field == "page_size"


# -- queue registry ------------------------------------------------------------------------------


def test_queue_registry_orders_masks_pages_and_ignores_stale_events(registry, publish):
    district = random_name("district")
    queue = f"{district}/general/2022"
    n = [f"T-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    waiter = handled("on_queue_entry_changed")
    publish(
        entry(n[0], 1, queue_name=queue, district=district, filed=1),
        entry(n[1], 3, queue_name=queue, district=district, filed=2, tier="first_priority"),
        entry(n[2], 1, queue_name=queue, district=district, filed=3, language="ru"),
        entry(n[3], 1, queue_name=queue, district=district, filed=0, status="withdrawn"),
    )
    waiter.wait(4)

    page = registry.list_queue({"district": district}, 1, 50)
    assert [(r["application_number"], r["queue_number"]) for r in page["items"]] == [
        (n[1], 1), (n[0], 2), (n[2], 3)]  # the benefit goes first; withdrawn is not listed
    first = page["items"][0]
    assert first["applicant_name"] == "Ахметов А.Б." and first["child_name"] == "Ахметова Д.А."
    assert first["first_priority_benefit"] is True and first["provided"] is False
    assert page["columns"][:3] == ["queue_name", "queue_number", "application_number"]

    # filters keep the queue number of the whole queue; paging
    ru = registry.list_queue({"district": district, "language": "ru"}, 1, 50)
    assert [(r["application_number"], r["queue_number"]) for r in ru["items"]] == [(n[2], 3)]
    second = registry.list_queue({"district": district}, 2, 2)
    assert (second["total"], [(r["application_number"], r["queue_number"])
                              for r in second["items"]]) == (3, [(n[2], 3)])
    with pytest.raises(BadInput) as err:
        registry.list_queue({"district": district, "birth_year": "soon"}, 1, 10)
    assert err.value.field == "birth_year"

    # an older revision does not overwrite a newer one; a redelivered event changes nothing
    before = registry.queue_lookup(n[1])
    redelivered = entry(n[0], 2, queue_name=queue, district=district, filed=1,
                        status="provided")
    duplicates = consumed("on_queue_entry_changed", "duplicate")
    waiter = handled("on_queue_entry_changed")
    publish(entry(n[1], 2, queue_name=queue, district=district, filed=2, status="withdrawn"),
            redelivered, redelivered)
    waiter.wait(3)
    assert consumed("on_queue_entry_changed", "duplicate") == duplicates + 1
    after = registry.queue_lookup(n[1])
    # n[0] changed, so the registry was republished; n[1]'s row is what it was
    assert (dt.datetime.fromisoformat(after["republished_at"])
            > dt.datetime.fromisoformat(before["republished_at"]))
    assert {**after, "republished_at": None} == {**before, "republished_at": None}
    assert after["status"] == "queued" and after["queue_number"] == 1
    provided = registry.queue_lookup(n[0])
    assert (provided["status"], provided["provided"], provided["queue_number"]) == (
        "provided", True, None)
    assert registry.queue_lookup(n[2])["queue_number"] == 2


def test_queue_numbers_follow_tier_filing_moment_and_number(registry, publish):
    district = random_name("district")
    queue = f"{district}/general/2022"
    tag = uuid.uuid4().hex[:6]
    specs = [  # (suffix, filed hour, tier, status)
        ("07", 5, "none", "queued"), ("03", 5, "none", "queued"), ("05", 5, "none", "offered"),
        ("01", 9, "out_of_turn", "queued"), ("02", 1, "first_priority", "stop_listed"),
        ("04", 2, "first_priority", "queued"), ("06", 0, "out_of_turn", "provided"),
        ("08", 0.5, "none", "queued"), ("09", 3, "none", "withdrawn"),
    ]
    entries = [{"application_number": f"T{tag}-{suffix}", "filed_at": iso(hour),
                "benefit_tier": tier, "status": status, "queue_name": queue}
               for suffix, hour, tier, status in specs]
    waiter = handled("on_queue_entry_changed")
    publish(*[entry(e["application_number"], 1, queue_name=queue, district=district,
                    filed=hour, tier=e["benefit_tier"], status=e["status"])
              for e, (_, hour, _, _) in zip(entries, specs)])
    waiter.wait(len(specs))
    expected = domain.positions(entries)
    assert expected[f"T{tag}-01"] == 1 and expected[f"T{tag}-03"] < expected[f"T{tag}-07"]

    listed = registry.list_queue({"queue_name": queue}, 1, 50)["items"]
    assert [(r["application_number"], r["queue_number"]) for r in listed] == sorted(
        expected.items(), key=lambda kv: kv[1]) + [(f"T{tag}-06", None)]
    # one row per page: every page finds the same numbers
    paged = [registry.list_queue({"queue_name": queue}, page, 1)["items"][0]["queue_number"]
             for page in range(1, len(expected) + 1)]
    assert paged == list(range(1, len(expected) + 1))
    for number, position in expected.items():
        assert registry.queue_lookup(number)["queue_number"] == position
    assert registry.queue_lookup(f"T{tag}-09")["queue_number"] is None


def test_queue_lookup_05_22(registry, publish):
    district = random_name("district")
    queue = f"{district}/general/2022"
    number = f"T-{uuid.uuid4().hex[:8]}"
    waiter = handled("on_queue_entry_changed")
    publish(entry(number, 1, queue_name=queue, district=district),
            entry(number, 2, queue_name=queue, district=district, status="stop_listed",
                  stop_list={"entered_at": iso(30), "exits_at": "2026-08-01",
                             "reason": "postponed"}))
    waiter.wait(2)
    row = registry.queue_lookup(number)
    assert (row["queue_name"], row["queue_number"], row["status"]) == (queue, 1, "stop_listed")
    assert (row["stop_list_entered_on"], row["stop_list_exits_on"], row["stop_list_reason"]) == (
        "2026-03-03", "2026-08-01", "postponed")
    assert row["applicant_name"] == "Ахметов А.Б." and row["republished_at"]
    with pytest.raises(NotFound):
        registry.queue_lookup("T-none")


def test_several_lookups_in_one_call_answer_each_number_in_order(registry, publish):
    district = random_name("district")
    queue = f"{district}/general/2022"
    first, second = (f"T-{uuid.uuid4().hex[:8]}" for _ in range(2))
    waiter = handled("on_queue_entry_changed")
    publish(entry(first, 1, queue_name=queue, district=district, filed=1.0),
            entry(second, 1, queue_name=queue, district=district, filed=2.0))
    waiter.wait(2)
    outcomes = registry.queue_lookups([second, "T-none", first, "  ", f" {second} "])
    assert [o.get("result", {}).get("application_number") for o in outcomes] == [
        second, None, first, None, second]
    assert outcomes[0]["result"] == registry.queue_lookup(second)
    assert (outcomes[0]["result"]["queue_number"], outcomes[2]["result"]["queue_number"]) == (2, 1)
    missing, blank = deserialize(outcomes[1]["error"]), deserialize(outcomes[3]["error"])
    assert isinstance(missing, NotFound) and missing.field == "application_number"
    assert isinstance(blank, BadInput) and blank.field == "application_number"
    with pytest.raises(BadInput) as refused:
        registry.queue_lookups("T-none")
    assert refused.value.field == "application_numbers"


def test_full_names_when_the_setting_says_so(kezek_config, start_services, rpc, publish):
    config = copy.deepcopy(kezek_config)
    config["KEZEK"]["PUBLIC_FULL_NAMES"] = "true"
    start_services(RegistryService, config=config)
    district = random_name("district")
    number = f"T-{uuid.uuid4().hex[:8]}"
    waiter = handled("on_queue_entry_changed")
    publish(entry(number, 1, queue_name=f"{district}/general/2022", district=district))
    waiter.wait(1)
    with rpc() as cluster:
        row = cluster.registry.queue_lookup(number)
    assert (row["applicant_name"], row["child_name"]) == (
        "Ахметов Арман Болатович", "Ахметова Дана Армановна")


# -- places, releases, directions ----------------------------------------------------------------


def test_vacancies_and_release_protocol(registry, publish):
    org, (group,) = new_org(registry, kk=KK_2022)
    pid = next(_seq) * 1000 + 7
    released = handled("on_place_released")
    changed = handled("on_place_changed")
    first = place("place_released", pid, 1, org=org, group=group)
    publish(first, first)  # the same event twice
    released.wait(2)
    vacancies = registry.list_vacancies({"organization_id": org["id"]}, 1, 10)
    assert vacancies["total"] == 1
    vacancy = vacancies["items"][0]
    assert (vacancy["place_id"], vacancy["in_priority_period"], vacancy["organization_name"]) == (
        pid, True, org["name"])
    assert registry.get_organization(org["id"])["vacancies"] == 1

    # the place is directed: off the vacancies list; an older snapshot does not bring it back
    publish(place("place_changed", pid, 3, org=org, group=group, status="directed"))
    changed.wait(1)
    publish(place("place_changed", pid, 2, org=org, group=group, status="vacancy"))
    changed.wait(2)
    assert registry.list_vacancies({"organization_id": org["id"]}, 1, 10)["total"] == 0

    # the direction was declined and the place released again: a second protocol row
    publish(place("place_released", pid, 4, org=org, group=group, released=50))
    released.wait(3)
    protocol = registry.list_releases({"organization_id": org["id"]}, 1, 10)
    assert protocol["total"] == 2
    newest = protocol["items"][0]
    assert (newest["place_id"], newest["group_name"], newest["released_date"]) == (
        pid, "Күншуақ", "2026-03-04")
    assert set(protocol["columns"]) <= set(newest)
    day = registry.list_releases({"organization_id": org["id"], "from": "2026-03-02",
                                  "to": "2026-03-02"}, 1, 10)
    assert day["total"] == 1 and day["items"][0]["released_date"] == "2026-03-02"
    assert registry.list_vacancies({"organization_id": org["id"]}, 1, 10)["total"] == 1


def test_directions_protocol_and_enrolment(registry, publish):
    org, (group,) = new_org(registry, kk=KK_2022)
    number = f"D-{uuid.uuid4().hex[:8]}"
    late = f"D-{uuid.uuid4().hex[:8]}"
    issued = handled("on_direction_issued")
    changed = handled("on_direction_changed")
    publish(direction("direction_issued", number, 1, org=org, group=group))
    issued.wait(1)
    enrolled = direction("direction_changed", number, 2, org=org, group=group, status="enrolled")
    publish(enrolled, enrolled)  # redelivered
    changed.wait(2)
    # out of order: the enrolment of `late` arrives before its issue
    publish(direction("direction_changed", late, 2, org=org, group=group, status="enrolled"))
    changed.wait(3)
    publish(direction("direction_issued", late, 1, org=org, group=group))
    issued.wait(2)

    assert registry.get_group(group["id"])["enrolled"] == 2
    protocol = registry.list_directions({"organization_id": org["id"]}, 1, 10)
    assert protocol["total"] == 2
    assert {r["status"] for r in protocol["items"]} == {"enrolled"}
    row = protocol["items"][0]
    assert "application_number" not in row and "A-secret" not in str(protocol)
    assert row["child_name"] == "Ахметова Д.А." and row["organization_name"] == org["name"]
    assert registry.list_directions({"organization_id": org["id"], "status": "issued"},
                                    1, 10)["total"] == 0


def test_statistics_suppress_small_figures(registry, publish):
    district = random_name("district")
    big, small = f"{district}/general/2022", f"{district}/special/2022"
    waiter = handled("on_queue_entry_changed")
    publish(*[entry(f"T-{uuid.uuid4().hex[:8]}", 1, queue_name=big, district=district)
              for _ in range(5)],
            *[entry(f"T-{uuid.uuid4().hex[:8]}", 1, queue_name=small, district=district,
                    queue_type="special") for _ in range(2)])
    waiter.wait(7)
    stats = registry.statistics({"district": district})
    sizes = {q["queue_name"]: q["children"] for q in stats["queues"]}
    assert sizes == {big: {"count": 5, "suppressed": False},
                     small: {"count": None, "suppressed": True}}
    assert stats["flows"] == [{"day": "2026-03-02", "filed": {"count": 7, "suppressed": False},
                               "withdrawn": {"count": 0, "suppressed": False},
                               "provided": {"count": 0, "suppressed": False}}]
    special = registry.statistics({"district": district, "queue_type": "special"})
    assert special["flows"][0]["filed"] == {"count": None, "suppressed": True}
    assert "John" not in str(stats) and "Ахметов" not in str(stats)


def test_queue_totals_come_from_counts_kept_with_the_rows(registry, publish, db_engine):
    """The per-queue counts follow every change of the rows (new, changed, withdrawn, a bulk
    write, a delete by reconcile), and the totals of the registry page are theirs."""
    district = random_name("district")
    tag = uuid.uuid4().hex[:6]
    queues = {year: f"{district}/general/{year}" for year in (2021, 2022)}
    numbers = [f"C{tag}-{i}" for i in range(6)]
    waiter = handled("on_queue_entry_changed")
    publish(*[entry(n, 1, queue_name=queues[2021 + i % 2], district=district,
                    birth_year=2021 + i % 2, filed=i, language="kk" if i < 4 else "ru")
              for i, n in enumerate(numbers)])
    waiter.wait(len(numbers))
    waiter = handled("on_queue_entry_changed")
    publish(entry(numbers[0], 2, queue_name=queues[2021], district=district, birth_year=2021,
                  filed=0, status="withdrawn"),
            entry(numbers[1], 2, queue_name=queues[2022], district=district, birth_year=2022,
                  filed=1, status="stop_listed", tier="first_priority"),
            entry(numbers[2], 2, queue_name=queues[2021], district=district, birth_year=2021,
                  filed=2, status="provided"))
    waiter.wait(3)

    def counted() -> dict:
        with db_engine.connect() as conn:
            return {tuple(r[:-1]): r[-1] for r in conn.execute(text(
                "SELECT queue_name, language, status, benefit_tier, n FROM registry.queue_counts "
                "WHERE district = :d AND n > 0"), {"d": district})}

    def actual() -> dict:
        with db_engine.connect() as conn:
            return {tuple(r[:-1]): r[-1] for r in conn.execute(text(
                "SELECT queue_name, language, status, benefit_tier, count(*) "
                "FROM registry.queue_entries WHERE district = :d AND status <> 'withdrawn' "
                "GROUP BY 1, 2, 3, 4"), {"d": district})}

    assert counted() == actual() == {
        (queues[2022], "kk", "stop_listed", "first_priority"): 1,
        (queues[2021], "kk", "provided", "none"): 1,
        (queues[2022], "kk", "queued", "none"): 1,
        (queues[2021], "ru", "queued", "none"): 1,
        (queues[2022], "ru", "queued", "none"): 1,
    }
    for filters, expected in [
        ({"district": district}, 5),
        ({"district": district, "birth_year": 2021}, 2),
        ({"district": district, "language": "ru"}, 2),
        ({"district": district, "status": "queued"}, 3),
        ({"district": district, "benefit_tier": "first_priority"}, 1),
        ({"queue_name": queues[2022], "queue_type": "general"}, 3),
        ({"district": district, "from": "2026-03-02"}, 5),  # not a counted column: counted
    ]:
        page = registry.list_queue(filters, 1, 2)
        assert (page["total"], len(page["items"])) == (expected, min(2, expected)), filters

    # writes that bypass the handler (a bulk copy, reconcile's repair) keep them too
    with db_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO registry.queue_entries (application_number, revision, queue_name, "
            "district, queue_type, birth_year, language, status, benefit_tier, filed_at, "
            "applicant_name, child_name, republished_at) SELECT :t || '-bulk-' || i, 1, :q, "
            ":d, 'general', 2021, 'kk', 'queued', 'none', now(), 'A', 'B', now() "
            "FROM generate_series(1, 3) i"), {"t": f"C{tag}", "q": queues[2021], "d": district})
        conn.execute(text("DELETE FROM registry.queue_entries WHERE application_number = :n"),
                     {"n": numbers[5]})
    assert counted() == actual()
    assert registry.list_queue({"district": district}, 1, 50)["total"] == 7


def test_a_batch_of_events_leaves_the_read_models_as_the_events_one_by_one(registry, db_engine):
    """The batched handlers apply several events in a few set-based statements: the same
    stream, applied event by event in one organisation and district and as batches in
    another, leaves the same rows, group fill and statistic facts, and the same outcomes."""
    from services.common.db import DatabaseAccess
    from services.registry import commands

    settings = domain.RegistrySettings()
    db = DatabaseAccess(db_engine, "registry")

    def stream(tag: str):
        district = random_name("district")
        org, (group,) = new_org(registry, district, kk=KK_2022)
        queue = f"{district}/general/2022"
        p = [f"{tag}-P{i}" for i in range(3)]
        d = [f"{tag}-D{i}" for i in range(3)]
        n = [f"{tag}-A{i}" for i in range(3)]
        kw = {"org": org, "group": group}
        batches = [
            ("registry.on_place_released", "place_released",
             [place("place_released", pid, 1, **kw) for pid in p]),
            ("registry.on_place_changed", "place_changed",
             [place("place_changed", p[0], 2, status="vacancy", **kw),
              place("place_changed", p[1], 3, status="vacancy", **kw),
              place("place_changed", p[1], 2, **kw),  # older than the one before it
              place("place_changed", p[0], 2, status="vacancy", **kw)]),  # another copy
            ("registry.on_direction_issued", "direction_issued",
             [direction("direction_issued", d[i], 1, place_id=p[i], **kw) for i in range(3)]),
            ("registry.on_direction_changed", "direction_changed",
             [direction("direction_changed", d[0], 2, status="enrolled", place_id=p[0], **kw),
              direction("direction_changed", d[1], 2, status="declined", place_id=p[1], **kw),
              direction("direction_changed", d[1], 3, status="enrolled", place_id=p[1], **kw),
              direction("direction_changed", d[2], 1, place_id=p[2], **kw)]),  # stale
            ("registry.on_queue_entry_changed", "queue_entry_changed",
             [entry(n[0], 1, queue_name=queue, district=district),
              entry(n[1], 1, queue_name=queue, district=district, tier="first_priority"),
              entry(n[0], 2, queue_name=queue, district=district, status="provided"),
              entry(n[2], 2, queue_name=queue, district=district, status="withdrawn"),
              entry(n[2], 1, queue_name=queue, district=district)]),
        ]
        batches[3][2].append(batches[3][2][0])  # the same event delivered twice
        return org, group, district, batches

    def one_by_one(handler, event_type, envelopes):
        apply = {"place_released": lambda e, data: commands.apply_place(
                     db, e, data, True, settings, handler=handler),
                 "place_changed": lambda e, data: commands.apply_place(
                     db, e, data, False, settings, handler=handler),
                 "queue_entry_changed": lambda e, data: commands.apply_queue_entry(
                     db, e, data, settings, handler=handler)}.get(
            event_type, lambda e, data: commands.apply_direction(
                db, e, data, settings, handler=handler))
        return [apply(e["event_id"], e["data"]) for e in envelopes]

    def batched(handler, event_type, envelopes):
        clean, many = {
            "place_released": (domain.clean_place,
                               lambda tx, s: commands.apply_places(tx, s, True, settings)),
            "place_changed": (domain.clean_place,
                              lambda tx, s: commands.apply_places(tx, s, False, settings)),
            "queue_entry_changed": (domain.clean_entry, lambda tx, s:
                                    commands.apply_queue_entries(tx, s, settings)),
        }.get(event_type, (domain.clean_direction,
                           lambda tx, s: commands.apply_directions(tx, s, settings)))
        return commands.apply_batch(db, handler, [(e["event_id"], clean(e["data"]))
                                                  for e in envelopes], many)

    def state(tag, org, group, district):
        with db_engine.connect() as conn:
            def rows(sql):
                return [tuple(str(v).replace(tag, "T") for v in r)
                        for r in conn.execute(text(sql), {"t": tag + "%", "o": org["id"],
                                                          "d": district, "g": group["id"]})]
            return {
                "places": rows("SELECT place_id, revision, status FROM registry.places "
                               "WHERE place_id #>> '{}' LIKE :t ORDER BY 1"),
                "releases": rows("SELECT place_id, release_revision, revision, "
                                 "priority_ends_at FROM registry.releases "
                                 "WHERE place_id #>> '{}' LIKE :t ORDER BY 1, 2"),
                "directions": rows("SELECT number, revision, status FROM registry.directions "
                                   "WHERE number LIKE :t ORDER BY 1"),
                "entries": rows("SELECT application_number, revision, status, benefit_tier "
                                "FROM registry.queue_entries WHERE application_number LIKE :t "
                                "ORDER BY 1"),
                "facts": rows("SELECT kind, count(*) FROM registry.stat_facts "
                              "WHERE organization_id = :o OR district = :d GROUP BY 1 ORDER BY 1"),
                "enrolled": rows("SELECT enrolled FROM registry.groups WHERE id = :g"),
            }

    results = {}
    for how, apply in (("single", one_by_one), ("batch", batched)):
        tag = f"{how[0].upper()}{uuid.uuid4().hex[:6]}"
        org, group, district, batches = stream(tag)
        outcomes = [apply(handler, event_type, envelopes)
                    for handler, event_type, envelopes in batches]
        results[how] = (outcomes, state(tag, org, group, district))
    single, batch = results["single"], results["batch"]
    assert batch[1] == single[1]
    assert batch[1]["enrolled"] == [("2",)]
    assert ("place_released", "3") in batch[1]["facts"]
    assert batch[0] == single[0]  # applied, stale and duplicate alike
    assert batch[0][3][-1] == "duplicate" and "stale" in batch[0][1]
