"""The applications service on real RabbitMQ and PostgreSQL, with the real registry (preference
check) and queue (queue number) beside it: filing, one active application per child, withdrawal,
Idempotency-Key, benefit verification, and the parent's feed kept from queue and allocation
events (published here as those services would), redelivery included.

Every test makes its own district, organisation, applicants and children.
"""

import datetime as dt
import random
import uuid

import eventlet
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from services.applications import commands
from services.applications.domain import make_iin
from services.applications.service import ApplicationsService
from services.common import contracts
from services.common.amqp import ConfirmingPublisher
from services.common.db import DatabaseAccess, get_engine
from services.common.errors import BadInput, Conflict, Forbidden, NotFound, RuleRefused
from services.queue.service import QueueService
from services.registry.service import RegistryService
from tests.helpers import random_name, wait_for

OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}
TODAY = dt.date.today()
BIRTH_DATE = dt.date(TODAY.year - 3, 5, 17)


def parent() -> dict:
    phone = "+7" + "".join(random.choices("0123456789", k=10))
    return {"id": f"applicant:{phone}", "role": "applicant", "organization_id": None,
            "request_id": str(uuid.uuid4()), "phone": phone}


def child_iin(born: dt.date = BIRTH_DATE) -> str:
    while True:
        try:
            return make_iin(born, random.choice("MF"), random.randint(0, 9999))
        except ValueError:
            continue


@pytest.fixture
def cluster(kezek_config, start_services):
    start_services(RegistryService, QueueService, ApplicationsService)
    with ClusterRpcProxy(kezek_config, timeout=30) as proxy:
        yield proxy


@pytest.fixture
def region(cluster):
    """A random district with one kindergarten that has a group for BIRTH_DATE's year."""
    district = random_name("district")
    org = cluster.registry.create_organization(
        {"name": random_name("Балапан"), "address": "Абай 1", "district": district,
         "ownership": "state", "kind": "kindergarten", "languages": ["kk", "ru"],
         "monthly_fee_kzt": 0}, OFFICER)
    cluster.registry.add_group(
        org["id"], {"name": "Ортаңғы топ", "group_type": "general",
                    "birth_year": BIRTH_DATE.year, "language": "kk", "capacity": 25,
                    "enrolled": 0}, OFFICER)
    return {"district": district, "organization_id": org["id"]}


def new_application(region, actor, iin=None, **changes) -> dict:
    data = {
        "applicant": {"iin": "900101301233", "full_name": "Әлия Серікқызы",
                      "phone": actor["phone"]},
        "child": {"iin": iin or child_iin(), "full_name": "Айгерім Серікқызы",
                  "birth_date": BIRTH_DATE.isoformat()},
        "queue_type": "general",
        "language": "kk",
        "district": region["district"],
        "preferred_organizations": [region["organization_id"]],
        "desired_start": (TODAY + dt.timedelta(days=200)).isoformat(),
        "benefit": None,
    }
    data.update(changes)
    return data


def feed_kinds(cluster, actor) -> list[str]:
    return [e["kind"] for e in cluster.applications.feed(actor, 1, 100)["items"]]


def test_filing_gives_a_number_a_queue_and_a_feed_entry(cluster, region):
    mother, father = parent(), parent()
    first = cluster.applications.file_application(new_application(region, mother), mother)
    second = cluster.applications.file_application(new_application(region, father), father)

    queue_name = f"{region['district']}/general/{BIRTH_DATE.year}"
    assert first["application_number"].startswith("A") and len(first["application_number"]) == 10
    assert first["application_number"] < second["application_number"]
    assert (first["queue_name"], first["queue_number"], first["status"]) == (queue_name, 1,
                                                                              "queued")
    assert (second["queue_name"], second["queue_number"]) == (queue_name, 2)
    assert dt.datetime.fromisoformat(first["filed_at"]) <= \
        dt.datetime.fromisoformat(second["filed_at"])

    mine = cluster.applications.my_applications(mother)
    assert [a["application_number"] for a in mine] == [first["application_number"]]
    assert mine[0]["queue_number"] == 1
    assert mine[0]["preferred_organizations"] == [region["organization_id"]]

    one = cluster.applications.get_application(first["application_number"], mother)
    assert [h["kind"] for h in one["history"]] == ["application_filed"]
    assert one["child"]["birth_date"] == BIRTH_DATE.isoformat()
    with pytest.raises(Forbidden):
        cluster.applications.get_application(first["application_number"], father)
    assert cluster.applications.get_application(first["application_number"],
                                                OFFICER)["status"] == "queued"
    with pytest.raises(NotFound):
        cluster.applications.get_application("A999999999", OFFICER)

    feed = cluster.applications.feed(mother, 1, 10)
    assert feed["total"] == 1
    entry = feed["items"][0]
    assert (entry["kind"], entry["application_number"]) == ("filed",
                                                            first["application_number"])
    assert first["application_number"] in entry["text"]["kk"]
    assert first["application_number"] in entry["text"]["ru"]


def test_application_filed_event_carries_the_contract(cluster, region, db_engine):
    mother = parent()
    data = new_application(region, mother,
                           benefit={"category": "large_families", "document": "certificate 5"})
    filed = cluster.applications.file_application(data, mother)
    with db_engine.connect() as conn:
        payload = conn.execute(text(
            "SELECT payload FROM applications.outbox WHERE routing_key = 'application_filed' "
            "AND payload->'data'->>'application_number' = :n"),
            {"n": filed["application_number"]}).scalar_one()
    event = contracts.parse(payload, "applications", "application_filed")
    assert event["benefit"] == {"category": "large_families", "tier": "first_priority",
                                "verified": False}
    assert event["applicant_id"] == mother["id"]
    assert event["filed_at"] == filed["filed_at"]
    assert (event["current_organization_id"], event["current_group_id"]) == (None, None)


def test_bad_input_is_refused_naming_the_field_and_files_nothing(cluster, region):
    mother = parent()
    with pytest.raises(BadInput) as err:
        cluster.applications.file_application(
            {**new_application(region, mother), "filed_at": "2020-01-01T00:00:00+00:00"}, mother)
    assert err.value.field == "filed_at"

    data = new_application(region, mother)
    data["child"]["iin"] = data["child"]["iin"][:11] + str((int(data["child"]["iin"][11]) + 1)
                                                           % 10)
    with pytest.raises(RuleRefused) as err:
        cluster.applications.file_application(data, mother)
    assert (err.value.field, err.value.code) == ("child.iin", "IIN_INVALID")

    # the registry refuses an organisation that does not exist
    with pytest.raises(BadInput) as err:
        cluster.applications.file_application(
            new_application(region, mother, preferred_organizations=[2_000_000_000]), mother)
    assert err.value.field == "preferred_organizations"

    assert cluster.applications.my_applications(mother) == []
    assert cluster.applications.feed(mother, 1, 10)["total"] == 0


def test_one_active_application_per_child_and_queue_type(cluster, region):
    mother = parent()
    iin = child_iin()
    first = cluster.applications.file_application(new_application(region, mother, iin), mother)
    with pytest.raises(Conflict) as err:
        cluster.applications.file_application(new_application(region, mother, iin), mother)
    assert first["application_number"] in err.value.message
    assert err.value.code == "DUPLICATE_APPLICATION"

    # once withdrawn, the child may be queued again under a new number
    cluster.applications.withdraw(first["application_number"], mother)
    again = cluster.applications.file_application(new_application(region, mother, iin), mother)
    assert again["application_number"] > first["application_number"]


def test_the_database_refuses_a_second_active_application(kezek_config, region):
    """The partial unique index, not only the check, keeps one active application per child."""
    db = DatabaseAccess(get_engine(kezek_config["DB_URL"]), "applications")
    mother = parent()
    filed = commands.file_application(db, new_application(region, mother), mother,
                                      check_preferences=None)
    with db.read() as tx:
        row = tx.execute("SELECT * FROM applications.applications WHERE number = :n",
                         {"n": filed["application_number"]}).mappings().one()
    with pytest.raises(IntegrityError, match="applications_one_active_per_child"):
        with db.transaction() as tx:
            tx.execute(
                "INSERT INTO applications.applications (number, applicant_id, child_iin, "
                "queue_type, language, district, birth_year, queue_name, desired_start, "
                "filed_at, status, status_changed_at) VALUES ('A999999998', :a, :c, :q, :l, :d, "
                ":b, :qn, :ds, now(), 'stop_listed', now())",
                {"a": row["applicant_id"], "c": row["child_iin"], "q": row["queue_type"],
                 "l": row["language"], "d": row["district"], "b": row["birth_year"],
                 "qn": row["queue_name"], "ds": row["desired_start"]})


def test_concurrent_filings_for_one_child_have_one_winner(kezek_config, region):
    db = DatabaseAccess(get_engine(kezek_config["DB_URL"]), "applications")
    mother = parent()
    iin = child_iin()

    def file(_):
        try:
            return commands.file_application(db, new_application(region, mother, iin), mother,
                                             check_preferences=None)
        except Conflict as exc:
            return exc

    outcomes = list(eventlet.GreenPool(6).imap(file, range(6)))
    winners = [o for o in outcomes if isinstance(o, dict)]
    losers = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(winners) == 1 and len(losers) == 5
    assert all(winners[0]["application_number"] in c.message for c in losers)

    # the same Idempotency-Key sent six times at once files one application
    key = str(uuid.uuid4())
    data = new_application(region, mother)
    results = list(eventlet.GreenPool(6).imap(
        lambda _: commands.file_application(db, data, mother, check_preferences=None,
                                            idempotency_key=key), range(6)))
    assert all(r == results[0] for r in results)
    assert len(commands.my_applications(db, mother)) == 2


def test_withdraw_is_final(cluster, region):
    mother, stranger = parent(), parent()
    filed = cluster.applications.file_application(new_application(region, mother), mother)
    number = filed["application_number"]
    with pytest.raises(Forbidden):
        cluster.applications.withdraw(number, stranger)

    withdrawn = cluster.applications.withdraw(number, mother)
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdrawn_at"] is not None
    with pytest.raises(Conflict) as err:
        cluster.applications.withdraw(number, mother)
    assert err.value.code == "ALREADY_WITHDRAWN"

    assert feed_kinds(cluster, mother) == ["withdrawn", "filed"]
    history = cluster.applications.get_application(number, mother)["history"]
    assert [h["kind"] for h in history][:2] == ["application_filed", "application_withdrawn"]
    # the queue hears of it through the application_withdrawn event
    wait_for(lambda: cluster.queue.lookup(number)["status"] == "withdrawn",
             message="queue entry withdrawn")


def test_idempotency_key_returns_the_first_result(cluster, region):
    mother = parent()
    data = new_application(region, mother)
    key = str(uuid.uuid4())
    first = cluster.applications.file_application(data, mother, key)
    again = cluster.applications.file_application(data, mother, key)
    assert again == first
    assert len(cluster.applications.my_applications(mother)) == 1
    assert feed_kinds(cluster, mother) == ["filed"]

    with pytest.raises(Conflict) as err:
        cluster.applications.file_application({**data, "language": "ru"}, mother, key)
    assert err.value.code == "IDEMPOTENCY_KEY_REUSED"


def test_benefit_verification_by_an_officer(cluster, region, db_engine):
    mother = parent()
    data = new_application(region, mother,
                           benefit={"category": "conscript_servicemen", "document": "ref 1"})
    number = cluster.applications.file_application(data, mother)["application_number"]
    with pytest.raises(Forbidden):
        cluster.applications.verify_benefit(number, True, None, mother)

    app = cluster.applications.verify_benefit(number, True, "checked", OFFICER)
    assert app["benefit"]["verified"] is True
    assert app["benefit"]["tier"] == "out_of_turn"
    with pytest.raises(Conflict) as err:
        cluster.applications.verify_benefit(number, False, None, OFFICER)
    assert err.value.code == "ALREADY_VERIFIED"
    assert feed_kinds(cluster, mother) == ["benefit_verified", "filed"]

    refused_number = cluster.applications.file_application(
        new_application(region, mother, benefit={"category": "orphans", "document": "x"}),
        mother)["application_number"]
    cluster.applications.verify_benefit(refused_number, False, "no document", OFFICER)
    with db_engine.connect() as conn:
        events = {r.payload["data"]["application_number"]: r.payload["data"] for r in
                  conn.execute(text("SELECT payload FROM applications.outbox "
                                    "WHERE routing_key = 'benefit_verified'"))}
    assert (events[number]["approved"], events[number]["tier"]) == (True, "out_of_turn")
    assert (events[refused_number]["approved"], events[refused_number]["tier"]) == (False, None)
    entry = cluster.applications.feed(mother, 1, 1)["items"][0]
    assert entry["kind"] == "benefit_refused" and "no document" in entry["text"]["ru"]

    categories = cluster.applications.benefit_categories()
    tiers = {c["code"]: c["tier"] for c in categories}
    assert tiers["conscript_servicemen"] == "out_of_turn"
    assert tiers["large_families"] == "first_priority"
    assert all(c["name"]["kk"] and c["name"]["ru"] for c in categories)


# -- the feed from other services' events ---------------------------------------------------------

@pytest.fixture
def applications_only(kezek_config, start_services):
    """No queue or allocation: the events below come from the test. The registry answers the
    organisation-name lookup for the "offered" text."""
    start_services(RegistryService, ApplicationsService)
    with ClusterRpcProxy(kezek_config, timeout=30) as proxy:
        yield proxy.applications


@pytest.fixture
def publish(kezek_config):
    publisher = ConfirmingPublisher(kezek_config["AMQP_URI"])

    def send(envelope):
        publisher.publish_batch([(f"{envelope['source']}.events", envelope["event_type"],
                                  envelope, {})])
        return envelope

    yield send
    publisher.close()


def application(db, number, actor):
    # read through the command: the RPC would also wait for the queue's (absent) live number
    return commands.get_application(db, number, actor)


def consumed(handler: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "kezek_messages_consumed_total",
        {"service": "applications", "handler": handler, "outcome": outcome}) or 0.0


def entry_changed(filed, revision, status, stop_list=None):
    return contracts.envelope("queue", "queue_entry_changed", {
        "application_number": filed["application_number"], "revision": revision,
        "queue_name": filed["queue_name"], "district": "d", "queue_type": "general",
        "birth_year": BIRTH_DATE.year, "language": "kk", "status": status,
        "benefit_tier": "none", "filed_at": filed["filed_at"], "stop_list": stop_list,
        "applicant_name": "Әлия Серікқызы", "child_name": "Айгерім Серікқызы",
        "preferred_organizations": [1]})


def direction(filed, event_type, revision, status, number, organization_id=2_000_000_001,
              issued_at="2026-11-25T04:00:00+00:00"):
    return contracts.envelope("allocation", event_type, {
        "number": number, "revision": revision, "status": status, "type": "priority",
        "place_id": str(uuid.uuid4()), "organization_id": organization_id, "group_id": 1,
        "application_number": filed["application_number"], "child_name": "Айгерім",
        "birth_year": BIRTH_DATE.year, "language": "kk",
        "issued_at": issued_at, "expires_at": "2026-12-02T12:00:00+00:00",
        "closed_at": None, "reason": None})


def filed_directly(kezek_config):
    """An application filed through the commands, no service running, in a district of its
    own: (db, the parent, the region, file_application's result)."""
    db = DatabaseAccess(get_engine(kezek_config["DB_URL"]), "applications")
    mother = parent()
    region = {"district": random_name("district"), "organization_id": 1}
    filed = commands.file_application(db, new_application(region, mother), mother,
                                      check_preferences=None)
    return db, mother, region, filed


def test_a_batch_of_events_leaves_what_they_leave_one_by_one(kezek_config):
    """Queue and allocation events handled as a batch (one transaction, the applications read
    together, journal and feed rows written at its end) leave each application with the same
    status, feed and journal as the same events handled one at a time, including two events
    for one application in one batch."""
    from services.common.db import each

    db = DatabaseAccess(get_engine(kezek_config["DB_URL"]), "applications")
    region = {"district": random_name("district"), "organization_id": 1}

    def world():
        mothers = [parent() for _ in range(3)]
        filed = [commands.file_application(db, new_application(region, m), m,
                                           check_preferences=None) for m in mothers]
        tag = uuid.uuid4().hex[:6]
        entries = [
            entry_changed(filed[0], 10, "offered"),
            entry_changed(filed[1], 10, "offered"),
            entry_changed(filed[0], 11, "stop_listed",
                          {"entered_at": "2026-12-02T12:00:00+00:00", "exits_at": None,
                           "reason": "direction_declined"}),
            entry_changed(filed[2], 10, "queued", {"reason": "x"}),  # stop-list note only
        ]
        directions = [
            direction(filed[1], "direction_issued", 1, "issued", f"DA{tag}"),
            direction(filed[2], "direction_issued", 1, "issued", f"DB{tag}"),  # still queued
        ]
        for event in directions:
            event["data"]["organization_name"] = "Айгөлек"
        return mothers, filed, entries, directions, tag

    def on_entry(numbers):
        return lambda access, p: commands.apply_queue_entry(
            access, p["event_id"], p["data"], batch_numbers=numbers)

    def on_direction(numbers):
        return lambda access, p: commands.apply_direction(
            access, "applications.on_direction_issued", p["event_id"], p["data"],
            batch_numbers=numbers)

    def seen(mothers, filed, tag):
        with db.engine.connect() as conn:
            journal = [
                [(r.kind, {k: v for k, v in r.data.items() if k != "event_id"})
                 for r in conn.execute(text(
                     "SELECT kind, data FROM applications.journal WHERE stream = :s "
                     "AND kind <> 'application_filed' ORDER BY seq"),
                     {"s": f"application:{f['application_number']}"})]
                for f in filed]
        feeds = [[(e["kind"], e["text"]["ru"].replace(f["application_number"], "N")
                   .replace(tag, "-"))
                  for e in commands.feed(db, m, 1, 50)["items"]]
                 for m, f in zip(mothers, filed)]
        statuses = [application(db, f["application_number"], m)["status"]
                    for m, f in zip(mothers, filed)]
        return statuses, feeds, [[(k, {x: y for x, y in d.items()
                                       if x not in ("application_number", "direction_number")})
                                  for k, d in j] for j in journal]

    mothers, filed, entries, directions, tag = world()
    alone = [on_entry(None)(db, e) for e in entries] + \
        [on_direction(None)(db, e) for e in directions]
    expected = seen(mothers, filed, tag)

    mothers, filed, entries, directions, tag = world()
    numbers = [e["data"]["application_number"] for e in entries]
    together = each(db, entries, on_entry(numbers), claim="applications.on_queue_entry_changed")
    numbers = [e["data"]["application_number"] for e in directions]
    together += each(db, directions, on_direction(numbers),
                     claim="applications.on_direction_issued")
    assert together == alone == ["applied"] * 6
    assert seen(mothers, filed, tag) == expected
    statuses, feeds, _ = expected
    assert statuses == ["stop_listed", "offered", "offered"]
    assert [kind for kind, _ in feeds[1]] == ["offered", "filed"]
    assert "Айгөлек" in feeds[2][0][1]


def test_offered_feed_names_the_organisation_the_direction_carries(kezek_config):
    """A direction that carries its organisation's name (allocation copies it in at release)
    is shown with that name, without asking the registry."""
    db, mother, region, filed = filed_directly(kezek_config)
    event = direction(filed, "direction_issued", 1, "issued", "D" + uuid.uuid4().hex[:8])
    kindergarten = random_name("Балапан")
    event["data"]["organization_name"] = kindergarten

    def registry_down(organization_id):
        raise AssertionError("the registry was asked for a name the direction carries")

    assert commands.apply_direction(db, "applications.on_direction_issued",
                                    event["event_id"], event["data"],
                                    organization_name=registry_down) == "applied"
    offered = commands.feed(db, mother, 1, 1)["items"][0]
    assert offered["kind"] == "offered"
    assert kindergarten in offered["text"]["kk"] and kindergarten in offered["text"]["ru"]


def test_feed_follows_queue_and_allocation_events(kezek_config, applications_only, publish):
    db, mother, region, filed = filed_directly(kezek_config)
    number = filed["application_number"]
    apps = applications_only

    def kinds():
        return [e["kind"] for e in apps.feed(mother, 1, 50)["items"]]

    kindergarten = random_name("Айгөлек")
    with ClusterRpcProxy(kezek_config, timeout=30) as rpc:
        org = rpc.registry.create_organization(
            {"name": kindergarten, "address": "Абай 2", "district": region["district"],
             "ownership": "state", "kind": "kindergarten", "languages": ["kk"]}, OFFICER)

    dnum = "D" + uuid.uuid4().hex[:8]
    publish(entry_changed(filed, 10, "offered"))
    publish(direction(filed, "direction_issued", 1, "issued", dnum, org["id"]))
    wait_for(lambda: kinds() == ["offered", "filed"], message="offered entry")
    offered = apps.feed(mother, 1, 1)["items"][0]
    assert dnum in offered["text"]["kk"] and dnum in offered["text"]["ru"]
    assert kindergarten in offered["text"]["kk"] and kindergarten in offered["text"]["ru"]
    assert "02.12.2026 17:00" in offered["text"]["ru"]  # expiry in Almaty time
    app = application(db, number, mother)
    assert app["status"] == "offered"
    assert (app["direction"]["number"], app["direction"]["status"]) == (dnum, "issued")

    # the parent lets it expire: allocation reports it, the queue stop-lists the child
    publish(direction(filed, "direction_changed", 2, "expired", dnum))
    publish(entry_changed(filed, 11, "stop_listed",
                          {"entered_at": "2026-12-02T12:00:00+00:00", "exits_at": None,
                           "reason": "direction_expired"}))
    wait_for(lambda: kinds()[0] == "stop_listed", message="stop-listed entry")
    stop = apps.feed(mother, 1, 1)["items"][0]
    assert "не использовано в срок" in stop["text"]["ru"]
    assert "мерзімінде пайдаланылмады" in stop["text"]["kk"]
    wait_for(lambda: application(db, number, mother)["direction"]["status"] == "expired",
             message="direction expired")

    # an older snapshot arriving late changes nothing
    publish(entry_changed(filed, 9, "queued"))
    back = entry_changed(filed, 12, "queued")
    publish(back)
    wait_for(lambda: kinds()[0] == "back_in_queue", message="back in queue")

    # redelivery of the same event: acknowledged as a duplicate, no second entry
    before = consumed("on_queue_entry_changed", "duplicate")
    publish(back)
    wait_for(lambda: consumed("on_queue_entry_changed", "duplicate") == before + 1,
             message="duplicate consumed")
    assert kinds() == ["back_in_queue", "stop_listed", "offered", "filed"]
    app = application(db, number, mother)
    assert app["status"] == "queued"
    assert app["history"][-1]["kind"] == "status_changed"

    # a second direction, then enrolment: "provided" once, although both services report it
    dnum2 = "D" + uuid.uuid4().hex[:8]
    publish(direction(filed, "direction_issued", 1, "issued", dnum2,
                      issued_at="2026-12-10T04:00:00+00:00"))
    wait_for(lambda: kinds()[0] == "offered", message="second offer")
    publish(direction(filed, "direction_changed", 2, "enrolled", dnum2,
                      issued_at="2026-12-10T04:00:00+00:00"))
    publish(entry_changed(filed, 13, "provided"))
    wait_for(lambda: _entry_revision(db, number) == 13, message="queue snapshot 13 applied")
    wait_for(lambda: application(db, number, mother)["direction"]["status"] == "enrolled",
             message="direction enrolled")
    assert application(db, number, mother)["status"] == "provided"
    assert kinds() == ["provided", "offered", "back_in_queue", "stop_listed", "offered",
                       "filed"]
    assert all(e["application_number"] == number for e in apps.feed(mother, 1, 50)["items"])


def _entry_revision(db, number):
    with db.read() as tx:
        return tx.execute("SELECT entry_revision FROM applications.applications "
                          "WHERE number = :n", {"n": number}).scalar()


def test_redelivered_direction_event_writes_one_entry(kezek_config, applications_only,
                                                      publish):
    db, mother, region, filed = filed_directly(kezek_config)
    issued = direction(filed, "direction_issued", 1, "issued", "D" + uuid.uuid4().hex[:8])
    before = consumed("on_direction_issued", "duplicate")
    publish(issued)
    publish(issued)
    wait_for(lambda: consumed("on_direction_issued", "duplicate") == before + 1,
             message="duplicate consumed")
    wait_for(lambda: applications_only.feed(mother, 1, 10)["total"] == 2, message="offered")
    kinds = [e["kind"] for e in applications_only.feed(mother, 1, 10)["items"]]
    assert kinds == ["offered", "filed"]
