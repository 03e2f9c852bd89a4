"""The demo region loader and the bulk paths it uses, on real PostgreSQL.

The small demo is loaded into two fresh databases (the loader refuses a registry holding other
organisations, so it cannot share the session database): same seed, same region. The bulk
paths' own rules (refusals, idempotency, no back-dating) are checked in the session database
with random data.
"""

import datetime as dt
import random
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services import demo
from services.applications import commands as app_commands
from services.applications import storage as app_storage
from services.applications.domain import check_iin, make_iin
from services.common.db import DatabaseAccess, get_engine
from services.common.errors import BadInput, Forbidden
from services.queue import commands as queue_commands
from tests.conftest import destroy_isolated_config, make_isolated_config
from tests.helpers import random_name

SYSTEM = {"id": "system:test", "role": "system", "organization_id": None, "request_id": None}
OFFICER = {"id": "officer:test", "role": "officer", "organization_id": None, "request_id": None}


def snapshot(config: dict) -> dict:
    """What a region is made of, without ids of rows that differ between databases."""
    engine = get_engine(config["DB_URL"])
    with engine.connect() as conn:
        orgs = conn.execute(text(
            "SELECT o.id, o.name, o.address, o.district, o.ownership, o.kind, o.languages, "
            "o.monthly_fee_kzt, (SELECT array_agg(g.name || '|' || g.group_type || '|' || "
            "g.birth_year || '|' || g.language || '|' || g.capacity || '|' || g.enrolled "
            "ORDER BY g.id) FROM registry.groups g WHERE g.organization_id = o.id) AS groups "
            "FROM registry.organizations o ORDER BY o.id")).all()
        apps = conn.execute(text(
            "SELECT a.number, a.child_iin, c.full_name AS child, c.birth_date, ap.iin, "
            "ap.full_name AS applicant, ap.phone, a.language, a.district, a.queue_type, "
            "a.queue_name, a.filed_at, a.desired_start, a.import_ref, b.category, b.status, "
            "(SELECT array_agg(p.organization_id ORDER BY p.position) FROM "
            "applications.preferences p WHERE p.application_number = a.number) AS prefs "
            "FROM applications.applications a JOIN applications.children c ON c.iin = "
            "a.child_iin JOIN applications.applicants ap ON ap.id = a.applicant_id "
            "LEFT JOIN applications.benefit_claims b ON b.application_number = a.number "
            "ORDER BY a.number")).all()
    return {"organizations": [tuple(r) for r in orgs], "applications": [tuple(r) for r in apps]}


@pytest.fixture(scope="module")
def two_regions():
    configs = [make_isolated_config(), make_isolated_config()]
    try:
        summaries = [demo.load(c, "small", seed=7) for c in configs]
        yield configs, summaries
    finally:
        for c in configs:
            destroy_isolated_config(c)


def test_the_same_seed_gives_the_same_region_in_two_databases(two_regions):
    configs, summaries = two_regions
    assert summaries[0]["loaded"] and summaries[0]["applications"] == 240
    first, second = snapshot(configs[0]), snapshot(configs[1])
    assert len(first["organizations"]) == 12
    assert len(first["applications"]) == 240
    assert first == second


def test_the_demo_applications_look_like_a_real_queue(two_regions):
    configs, _ = two_regions
    region = snapshot(configs[0])
    apps = region["applications"]
    for app in apps:
        check_iin(app[1], "child.iin")   # raises if a check digit is wrong
        check_iin(app[4], "applicant.iin")
        assert check_iin(app[1], "child.iin").birth_date == app[3]
    assert len({a[1] for a in apps}) == len(apps), "one application per child"
    languages = {a[7] for a in apps}
    assert languages == {"kk", "ru"}
    kk_share = sum(a[7] == "kk" for a in apps) / len(apps)
    assert 0.45 < kk_share < 0.8
    tiers = {"conscript_servicemen": "out", "special_state_bodies": "out"}
    out_of_turn = sum(1 for a in apps if a[14] in tiers)
    first_priority = sum(1 for a in apps if a[14] is not None and a[14] not in tiers)
    assert 0 < out_of_turn <= 0.08 * len(apps)
    assert 0.05 * len(apps) <= first_priority <= 0.2 * len(apps)
    filed = sorted(a[11] for a in apps)
    now = dt.datetime.now(dt.timezone.utc)
    assert filed[0] < now - dt.timedelta(days=2 * 365), "filing moments spread over years"
    assert filed[-1] <= now
    assert all(a[11].date() >= a[3] - dt.timedelta(days=1) for a in apps), "filed after birth"
    # applications numbers follow the filing moments of the import
    assert [a[0] for a in sorted(apps, key=lambda a: a[11])] == [a[0] for a in apps]
    # preferences: 1 to 3 organisations of the child's district
    districts = {o[0]: o[3] for o in region["organizations"]}
    assert all(1 <= len(a[16]) <= 3 and all(districts[o] == a[8] for o in a[16])
               for a in apps)


def test_the_demo_is_an_import_and_the_queue_orders_it(two_regions):
    configs, _ = two_regions
    config = configs[0]
    engine = get_engine(config["DB_URL"])
    apps_db = DatabaseAccess(engine, "applications")
    queue_db = DatabaseAccess(engine, "queue")
    with engine.connect() as conn:
        numbers = conn.execute(text(
            "SELECT number FROM applications.applications WHERE queue_type = 'general' "
            "ORDER BY queue_name, filed_at")).scalars().all()
        kinds = conn.execute(text(
            "SELECT DISTINCT kind FROM applications.journal WHERE stream LIKE 'application:%'"
        )).scalars().all()
        entries = conn.execute(text("SELECT count(*) FROM queue.entries")).scalar()
    assert entries == 240
    assert "application_imported" in kinds and "application_filed" not in kinds
    app = app_commands.get_application(apps_db, numbers[0], SYSTEM)
    assert app["imported"] is True and app["import_source"] == "demo:small:7"
    assert app["imported_at"] > app["filed_at"]
    assert app["history"][0]["kind"] == "application_imported"
    assert app["history"][0]["data"]["filed_at"] == app["filed_at"]
    assert app["history"][0]["at"] >= app["imported_at"], "the ledger is not back-dated"
    # the queue has every application, with the filing moment of the source system
    row = queue_commands.lookup(queue_db, numbers[0])
    assert row["filed_at"] == app["filed_at"] and row["queue_number"] >= 1
    # decided benefit claims reached the queue: an approved claim gives a tier
    with engine.connect() as conn:
        approved = conn.execute(text(
            "SELECT application_number, tier FROM applications.benefit_claims "
            "WHERE status = 'approved' LIMIT 1")).first()
    assert approved is not None
    assert queue_commands.lookup(queue_db, approved.application_number)["benefit_tier"] \
        == approved.tier


def test_loading_twice_stores_nothing_the_second_time(two_regions):
    configs, _ = two_regions
    engine = get_engine(configs[1]["DB_URL"])

    def counts():
        with engine.connect() as conn:
            return [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in (
                "registry.organizations", "registry.groups", "applications.applications",
                "applications.journal", "applications.outbox", "queue.entries",
                "queue.journal", "queue.outbox")]

    before = counts()
    again = demo.load(configs[1], "small", seed=7)
    assert again["loaded"] is False and again["applications"] == 0
    assert counts() == before


def test_the_loader_refuses_a_database_holding_another_region(two_regions):
    configs, _ = two_regions
    with pytest.raises(demo.DemoRefused):
        demo.load(configs[0], "small", seed=8)


# -- the bulk paths' rules, in the session database ------------------------------------------------

TODAY = dt.date.today()


def child_iin(born: dt.date) -> str:
    while True:
        try:
            return make_iin(born, random.choice("MF"), random.randint(0, 9999))
        except ValueError:
            continue


def request(district: str, born: dt.date | None = None, **changes) -> dict:
    born = born or dt.date(TODAY.year - 2, 3, 14)
    phone = "+7" + "".join(random.choices("0123456789", k=10))
    data = {
        "applicant": {"iin": "900101301233", "full_name": "Әлия Серікқызы", "phone": phone},
        "child": {"iin": child_iin(born), "full_name": "Айгерім Серікқызы",
                  "birth_date": born.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": [1], "desired_start": (TODAY + dt.timedelta(days=60)).isoformat(),
        "benefit": None,
    }
    data.update(changes)
    return data


@pytest.fixture
def apps_db(kezek_config):
    return DatabaseAccess(get_engine(kezek_config["DB_URL"]), "applications")


def test_bulk_filing_uses_the_database_clock_and_refuses_what_filing_refuses(apps_db):
    district = random_name("district")
    good = request(district)
    twin = request(district)
    twin["child"] = dict(good["child"])                      # same child, same queue type
    bad_iin = request(district)
    bad_iin["child"]["iin"] = bad_iin["child"]["iin"][:11] + str(
        (int(bad_iin["child"]["iin"][11]) + 1) % 10)
    backdated = request(district, filed_at="2020-01-01T00:00:00+05:00")
    with apps_db.read() as tx:
        before = tx.now()
    result = app_commands.file_applications_bulk(
        apps_db, [good, twin, bad_iin, backdated],
        lambda r: {"id": f"applicant:{r['applicant']['phone']}", "role": "applicant"},
        check_preferences=None)
    with apps_db.read() as tx:
        after = tx.now()
    assert [f["index"] for f in result["filed"]] == [0]
    assert {r["index"]: r["code"] for r in result["refused"]} == {
        1: "DUPLICATE_APPLICATION", 2: "IIN_INVALID", 3: "UNKNOWN_FIELD"}
    filed_at = dt.datetime.fromisoformat(result["filed"][0]["filed_at"])
    assert before <= filed_at <= after
    app = app_commands.get_application(apps_db, result["filed"][0]["application_number"],
                                       SYSTEM)
    assert app["imported"] is False and app["filed_at"] == result["filed"][0]["filed_at"]
    assert [h["kind"] for h in app["history"]] == ["application_filed"]
    # the event the bulk path built is the one file_application would publish
    with apps_db.read() as tx:
        row = app_storage.get_application(tx, app["application_number"])
    assert result["events"][0] == app_storage.filed_event_data(row)


def test_an_import_keeps_the_source_moment_and_is_idempotent(apps_db):
    district = random_name("district")
    born = dt.date(TODAY.year - 3, 6, 1)
    moment = dt.datetime(TODAY.year - 3, 9, 1, 10, 30, tzinfo=dt.timezone.utc)
    ref = uuid.uuid4().hex
    records = [{"ref": ref, "filed_at": moment.isoformat(),
                "application": request(district, born, benefit={
                    "category": "large_families", "document": "Куәлік №1"})}]
    first = app_commands.import_applications_bulk(apps_db, records, SYSTEM, source="test",
                                                  check_preferences=None)
    assert len(first["filed"]) == 1 and not first["refused"]
    number = first["filed"][0]["application_number"]
    app = app_commands.get_application(apps_db, number, SYSTEM)
    assert dt.datetime.fromisoformat(app["filed_at"]) == moment
    assert app["imported"] and app["import_source"] == "test"
    again = app_commands.import_applications_bulk(apps_db, records, SYSTEM, source="test",
                                                  check_preferences=None)
    assert again["filed"] == [] and again["skipped"] == [
        {"index": 0, "ref": ref, "application_number": number}]
    # the officer's decisions in bulk: as verify_benefit, and a second decision is refused
    decided = app_commands.verify_benefits_bulk(
        apps_db, [{"application_number": number, "approved": True, "note": None},
                  {"application_number": number, "approved": False, "note": None}], OFFICER)
    assert decided["verified"] == [{"application_number": number, "approved": True,
                                    "tier": "first_priority", "category": "large_families",
                                    "note": None}]
    assert [r["code"] for r in decided["refused"]] == ["ALREADY_VERIFIED"]
    assert app_commands.get_application(apps_db, number, SYSTEM)["benefit"]["verified"]


def test_an_import_refuses_the_future_a_moment_before_birth_and_an_applicant(apps_db):
    district = random_name("district")
    born = dt.date(TODAY.year - 1, 2, 1)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    records = [
        {"ref": "a", "filed_at": future.isoformat(), "application": request(district, born)},
        {"ref": "b", "filed_at": "2000-01-01T00:00:00+05:00",
         "application": request(district, born)},
        {"ref": "c", "filed_at": "2025-01-01T00:00:00", "application": request(district, born)},
    ]
    result = app_commands.import_applications_bulk(apps_db, records, SYSTEM,
                                                   source=random_name("src"),
                                                   check_preferences=None)
    assert result["filed"] == []
    assert [(r["ref"], r["code"]) for r in result["refused"]] == [
        ("a", "FILED_AT_IN_FUTURE"), ("b", "FILED_BEFORE_BIRTH"), ("c", "INVALID_INPUT")]
    parent = {"id": "applicant:+77010000001", "role": "applicant"}
    with pytest.raises(Forbidden):
        app_commands.import_applications_bulk(apps_db, records, parent, source="x",
                                              check_preferences=None)
    with pytest.raises(BadInput):
        app_commands.file_application(apps_db, request(district, filed_at=future.isoformat()),
                                      parent, check_preferences=None)


def test_the_database_refuses_a_backdated_filing_and_a_changed_filing_moment(apps_db):
    filed = app_commands.file_application(
        apps_db, request(random_name("district")),
        {"id": "applicant:+77010000002", "role": "applicant"}, check_preferences=None)
    with apps_db.read() as tx:
        row = tx.execute("SELECT * FROM applications.applications WHERE number = :n",
                         {"n": filed["application_number"]}).mappings().one()
    with pytest.raises(DBAPIError, match="database clock"):
        with apps_db.transaction() as tx:
            tx.execute(
                "INSERT INTO applications.applications (number, applicant_id, child_iin, "
                "queue_type, language, district, birth_year, queue_name, desired_start, "
                "filed_at, status, status_changed_at) VALUES ('A999999997', :a, :c, "
                "'sanatorium', :l, :d, :b, :qn, :ds, now() - interval '1 day', 'queued', now())",
                {"a": row["applicant_id"], "c": row["child_iin"], "l": row["language"],
                 "d": row["district"], "b": row["birth_year"], "qn": row["queue_name"],
                 "ds": row["desired_start"]})
    with pytest.raises(DBAPIError, match="never change"):
        with apps_db.transaction() as tx:
            tx.execute("UPDATE applications.applications SET filed_at = filed_at - "
                       "interval '1 year' WHERE number = :n", {"n": filed["application_number"]})


def test_bulk_enqueue_is_enqueue_for_many_and_idempotent(kezek_config, apps_db):
    queue_db = DatabaseAccess(get_engine(kezek_config["DB_URL"]), "queue")
    district = random_name("district")
    born = dt.date(TODAY.year - 2, 1, 10)
    records = [{"ref": str(i), "filed_at": dt.datetime(TODAY.year - 2, 2, 1 + i, 9,
                                                      tzinfo=dt.timezone.utc).isoformat(),
                "application": request(district, born)} for i in range(3)]
    imported = app_commands.import_applications_bulk(apps_db, records, SYSTEM,
                                                     source=random_name("src"),
                                                     check_preferences=None)
    events = imported["events"]
    assert queue_commands.enqueue_bulk(queue_db, events) == {
        "enqueued": 3, "existing": 0, "refused": []}
    assert queue_commands.enqueue_bulk(queue_db, events)["existing"] == 3
    numbers = [queue_commands.lookup(queue_db, e["application_number"])["queue_number"]
               for e in events]
    assert numbers == [1, 2, 3]
    # the application_filed event, handled later, finds the entry and changes nothing
    again = queue_commands.enqueue(queue_db, events[1])
    assert again["queue_number"] == 2
    with queue_db.read() as tx:
        rows = tx.execute("SELECT count(*) FROM queue.journal WHERE stream = :s",
                          {"s": f"application:{events[1]['application_number']}"}).scalar()
    assert rows == 1
    # an officer's approval in bulk moves the third child to the front, as the event would
    changed = queue_commands.benefits_verified_bulk(queue_db, [
        {"application_number": events[2]["application_number"], "approved": True,
         "tier": "first_priority", "category": "orphans", "note": None}])
    assert changed["changed"] == 1
    assert queue_commands.lookup(queue_db, events[2]["application_number"])[
        "queue_number"] == 1
    assert queue_commands.benefit_verified(queue_db, {
        "application_number": events[2]["application_number"], "approved": True,
        "tier": "first_priority", "category": "orphans", "note": None})["revision"] == 2



@pytest.fixture
def region_config():
    """A database and vhost of its own, dropped after the services started in it stop."""
    config = make_isolated_config()
    yield config
    destroy_isolated_config(config)


def test_the_demo_region_passes_reconcile_as_soon_as_it_is_loaded(region_config, start_services,
                                                                   tmp_path, capsys):
    """The loader brings the registry's queue read model up to the queue (no service runs
    while it loads); `kezek registry reconcile` against the started services then finds no
    difference, and the load's events, applied afterwards, change no row."""
    import yaml

    from services import cli
    from services.allocation.service import AllocationService
    from services.queue.service import QueueService
    from services.registry.service import RegistryService
    from tests.helpers import wait_for

    config = region_config
    summary = demo.load(config, "small", seed=3)
    engine = get_engine(config["DB_URL"])
    read_model = ("SELECT application_number, revision, status, queue_name "
                  "FROM registry.queue_entries ORDER BY 1")
    with engine.connect() as conn:
        queued = conn.execute(text("SELECT count(*) FROM queue.entries")).scalar()
        before = conn.execute(text(read_model)).all()
        unsent = conn.execute(text(
            "SELECT count(*) FROM queue.outbox WHERE sent_at IS NULL")).scalar()
    assert summary["registry_rows_projected"] == queued == len(before) > 200
    assert unsent >= queued  # every entry's event is still to be delivered

    start_services(RegistryService, QueueService, AllocationService, config=config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    code = cli.main(["--config", str(path), "registry", "reconcile", "--settle", "1"])
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert (code, lines[-1:]) == (
        0, ["0 differences (queue 0, places 0, directions 0, releases 0)"]), printed

    def applied() -> bool:  # every queue_entry_changed of the load through the inbox
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT (SELECT count(*) FROM registry.inbox "
                "        WHERE handler = 'registry.on_queue_entry_changed') "
                "     = (SELECT count(*) FROM queue.outbox "
                "        WHERE routing_key = 'queue_entry_changed')")).scalar()
    wait_for(applied, timeout=120, interval=0.5, message="the load's events applied")
    with engine.connect() as conn:
        assert conn.execute(text(read_model)).all() == before
