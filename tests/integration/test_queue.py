"""The queue service on real RabbitMQ and PostgreSQL: enqueue, order, reservations (with a race
between concurrent calls), the stop-list and its timer, and the events it reacts to.

Every test makes its own district and organisation ids, so queues and candidate pools of
different tests never meet in the shared session database.
"""

import copy
import datetime as dt
import json
import random
import uuid

import eventlet
import pytest
from kombu import Connection, Exchange, Queue
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.common import contracts
from services.common.amqp import ConfirmingPublisher
from services.common.db import DatabaseAccess
from services.common.errors import BadInput, Conflict, Forbidden, NotFound, RuleRefused
from services.queue.service import QueueService
from tests.helpers import random_name, wait_for

T0 = dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
APPLICANT = {"id": "applicant:+77010000001", "role": "applicant", "organization_id": None,
             "request_id": None}
OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}


@pytest.fixture
def config(kezek_config):
    """The session config with a fast stop-list timer."""
    cfg = copy.deepcopy(kezek_config)
    cfg["KEZEK"]["QUEUE_STOP_LIST_TIMER_SECONDS"] = 0.2
    return cfg


@pytest.fixture
def queue(config, start_services):
    start_services(QueueService, config=config)
    with ClusterRpcProxy(config, timeout=30) as cluster:
        yield cluster.queue


@pytest.fixture
def publish(config):
    publisher = ConfirmingPublisher(config["AMQP_URI"])

    def send(source, event_type, data=None, envelope=None):
        envelope = envelope or contracts.envelope(source, event_type, data)
        publisher.publish_batch([(f"{source}.events", event_type, envelope, {})])
        return envelope

    yield send
    publisher.close()


class Region:
    """A random district with its own organisations and application numbers."""

    def __init__(self):
        self.district = random_name("district")
        self.org = random.randint(10**9, 2 * 10**9)
        self.other_org = self.org + 1
        self.prefix = f"Q{uuid.uuid4().hex[:6].upper()}-"

    def number(self, n: int) -> str:
        return f"{self.prefix}{n:06d}"

    def filed(self, n: int, minutes: float = 0, **changes) -> dict:
        data = {
            "application_number": self.number(n), "applicant_name": f"Applicant {n}",
            "child_name": f"Child {n}", "child_birth_date": "2022-05-01", "birth_year": 2022,
            "queue_type": "general", "language": "kk", "district": self.district,
            "preferred_organizations": [self.org], "desired_start": "2026-09-01",
            "filed_at": (T0 + dt.timedelta(minutes=minutes)).isoformat(), "benefit": None,
            "current_organization_id": None, "current_group_id": None,
            "applicant_id": APPLICANT["id"],
        }
        data.update(changes)
        return data

    def place(self, org: int | None = None, **changes) -> dict:
        return {"place_id": f"place-{uuid.uuid4().hex[:12]}", "organization_id": org or self.org,
                "birth_year": 2022, "language": "kk", "group_type": "general", **changes}


def direction(number: str, place: dict, status: str, revision: int) -> dict:
    return {"number": f"D-{place['place_id']}", "revision": revision, "status": status,
            "type": "priority", "place_id": place["place_id"],
            "organization_id": place["organization_id"], "group_id": 1,
            "application_number": number, "child_name": "Child", "birth_year": 2022,
            "language": "kk", "issued_at": T0.isoformat(), "expires_at": T0.isoformat(),
            "closed_at": None, "reason": None}


def consumed(handler: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("kezek_messages_consumed_total",
                                     {"service": "queue", "handler": handler,
                                      "outcome": outcome}) or 0.0


def journal_kinds(db_engine, number: str) -> list[str]:
    with db_engine.connect() as conn:
        return list(conn.execute(text("SELECT kind FROM queue.journal WHERE stream = :s "
                                      "ORDER BY seq"), {"s": f"application:{number}"}).scalars())


def watch_snapshots(conn):
    """A private queue that receives every queue_entry_changed published from now on."""
    return conn.SimpleQueue(Queue(
        f"test-watch-{uuid.uuid4().hex[:8]}", routing_key="queue_entry_changed",
        exchange=Exchange("queue.events", type="topic", durable=True),
        exclusive=True, auto_delete=True))


def snapshot_of(watch, number: str) -> dict | None:
    """The first snapshot of ``number`` among the messages waiting in ``watch``."""
    while True:
        try:
            msg = watch.get(timeout=0.2)
        except watch.Empty:
            return None
        msg.ack()
        body = msg.payload if isinstance(msg.payload, dict) else json.loads(msg.payload)
        if body["data"]["application_number"] == number:
            return body["data"]


# -- enqueue and order --------------------------------------------------------------------------------
def test_enqueue_is_idempotent_and_numbers_follow_filing_order(queue, db_engine):
    r = Region()
    first = queue.enqueue(r.filed(2, minutes=1))
    assert first == {"application_number": r.number(2), "queue_name": f"{r.district}/general/2022",
                     "queue_number": 1, "status": "queued"}
    assert queue.enqueue(r.filed(1, minutes=0))["queue_number"] == 1
    assert queue.enqueue(r.filed(3, minutes=1))["queue_number"] == 3  # same moment: by number

    again = queue.enqueue(r.filed(2, minutes=1))
    assert again["queue_number"] == 2
    row = queue.lookup(r.number(2))
    assert row["revision"] == 1
    assert journal_kinds(db_engine, r.number(2)) == ["entered_queue"]
    assert row["filed_at"] == (T0 + dt.timedelta(minutes=1)).isoformat()
    assert {k: row[k] for k in ("queue_name", "queue_number", "applicant_name", "child_name",
                                "status", "queue_type", "benefit_tier", "stop_list",
                                "provided")} == {
        "queue_name": f"{r.district}/general/2022", "queue_number": 2,
        "applicant_name": "Applicant 2", "child_name": "Child 2", "status": "queued",
        "queue_type": "general", "benefit_tier": "none", "stop_list": None, "provided": False}


def test_bad_entry_is_refused_naming_the_field(queue):
    r = Region()
    with pytest.raises(BadInput) as err:
        queue.enqueue(r.filed(1, queue_type="evening"))
    assert err.value.field == "queue_type"
    with pytest.raises(BadInput) as err:
        queue.enqueue(r.filed(1, filed_at="yesterday"))
    assert err.value.field == "filed_at"
    with pytest.raises(NotFound):
        queue.lookup(r.number(1))


def test_filed_event_enqueues_and_snapshot_event_is_published(queue, publish, config):
    r = Region()
    with Connection(config["AMQP_URI"]) as conn:
        watch = watch_snapshots(conn)
        publish("applications", "application_filed", r.filed(1))
        row = wait_for(lambda: _lookup(queue, r.number(1)), message="entry from the event")
        assert row["queue_number"] == 1
        snap = wait_for(lambda: snapshot_of(watch, r.number(1)), message="snapshot")
        watch.close()
    assert snap["revision"] == 1
    assert snap["status"] == "queued"
    assert snap["stop_list"] is None
    assert snap["benefit_tier"] == "none"
    assert snap["preferred_organizations"] == [r.org]
    assert set(contracts.ENTRY_FIELDS) <= set(snap)


def in_status(queue, number: str, status: str) -> dict | None:
    """The queue row once it has reached ``status``, else None."""
    row = queue.lookup(number)
    return row if row["status"] == status else None


def _lookup(queue, number):
    try:
        return queue.lookup(number)
    except NotFound:
        return None


def test_verified_out_of_turn_benefit_moves_to_the_front_unverified_does_not(queue, publish):
    r = Region()
    queue.enqueue(r.filed(1, 0))
    queue.enqueue(r.filed(2, 1))
    claim = {"category": "conscript_child", "document": "X-1", "tier": "out_of_turn",
             "verified": False}
    assert queue.enqueue(r.filed(3, 2, benefit=claim))["queue_number"] == 3
    publish("applications", "benefit_verified",
            {"application_number": r.number(3), "approved": True, "tier": "out_of_turn",
             "category": "conscript_child", "note": "ok"})
    wait_for(lambda: queue.lookup(r.number(3))["queue_number"] == 1, message="moved up")
    assert queue.lookup(r.number(3))["benefit_tier"] == "out_of_turn"
    assert queue.lookup(r.number(1))["queue_number"] == 2

    publish("applications", "benefit_verified",
            {"application_number": r.number(3), "approved": False, "tier": "out_of_turn",
             "category": "conscript_child", "note": "document expired"})
    wait_for(lambda: queue.lookup(r.number(3))["queue_number"] == 3, message="moved back")
    assert queue.lookup(r.number(3))["benefit_tier"] == "none"


# -- reservations ----------------------------------------------------------------------------------------
def test_reserve_next_takes_the_first_eligible_in_queue_order(queue):
    r = Region()
    queue.enqueue(r.filed(1, 0, preferred_organizations=[r.other_org]))  # did not choose it
    queue.enqueue(r.filed(2, 1))                                          # will be stop-listed
    queue.enqueue(r.filed(3, 2))                                          # will be offered
    queue.enqueue(r.filed(4, 3, language="ru"))
    queue.enqueue(r.filed(5, 4, queue_type="special"))
    queue.enqueue(r.filed(6, 5, preferred_organizations=[r.other_org, r.org]))
    queue.enqueue(r.filed(7, 6, queue_type="transfer"))
    queue.stop_list_enter(r.number(2), "documents_check", None, OFFICER)
    elsewhere = queue.reserve_claimant(r.place(org=r.other_org), [r.number(3)])
    assert elsewhere["application_number"] == r.number(3)

    place = r.place()
    got = queue.reserve_next(place)
    assert got["application_number"] == r.number(6)
    assert got["status"] == "offered"
    assert got["applicant_id"] == APPLICANT["id"]
    assert got["child_name"] == "Child 6"
    assert queue.reserve_next(place) == got  # same place again: same child
    assert queue.lookup(r.number(6))["status"] == "offered"
    assert queue.lookup(r.number(6))["queue_number"] == 5  # offered keeps its number
    # (number 5: the special-needs application stands in another queue)

    assert queue.reserve_next(r.place())["application_number"] == r.number(7)  # transfer fits
    assert queue.reserve_next(r.place()) is None
    assert queue.reserve_next(r.place(group_type="special"))["application_number"] == r.number(5)
    assert queue.reserve_next(r.place(group_type="short_stay")) is None


def test_concurrent_reservations_have_exactly_one_winner_each(queue, config, db_engine,
                                                              start_services):
    start_services(QueueService, config=config)  # a second instance takes calls too
    r = Region()
    for n in range(30):
        queue.enqueue(r.filed(n, n))
    places = [r.place() for _ in range(50)]

    def reserve_batch(batch):
        with ClusterRpcProxy(config, timeout=60) as cluster:
            replies = [cluster.queue.reserve_next.call_async(p) for p in batch]
            return [reply.result() for reply in replies]

    pool = eventlet.GreenPool(10)
    results = [res for batch in pool.imap(reserve_batch, [places[i::10] for i in range(10)])
               for res in batch]

    winners = [res["application_number"] for res in results if res is not None]
    assert len(results) == 50
    assert sorted(winners) == [r.number(n) for n in range(30)]  # 30 distinct children
    assert results.count(None) == 20
    with db_engine.connect() as conn:
        open_rows = conn.execute(text(
            "SELECT count(*) FROM queue.reservations WHERE status = 'open' "
            "AND application_number LIKE :p"), {"p": r.prefix + "%"}).scalar()
    assert open_rows == 30


def test_places_reserved_together_go_to_the_children_in_queue_order(queue):
    r = Region()
    for n in range(4):
        queue.enqueue(r.filed(n, n))
    queue.enqueue(r.filed(9, 9, language="ru"))
    places = [r.place(), r.place(language="ru"), r.place(), r.place(language="ru"),
              r.place()]
    got = queue.reserve_next_many(places)
    assert [g and g["application_number"] for g in got] == [
        r.number(0), r.number(9), r.number(1), None, r.number(2)]
    assert all(g["status"] == "offered" for g in got if g)
    # the same places again: the same children, as reserve_next answers each place
    assert queue.reserve_next_many(places) == got
    assert queue.reserve_next(places[2]) == got[2]
    # a place named twice in one call is reserved once: both answers are the same child
    twice = r.place()
    first, again = queue.reserve_next_many([twice, twice])
    assert first["application_number"] == again["application_number"] == r.number(3)


def test_reserving_together_refuses_a_bad_place_and_reserves_nothing(queue):
    r = Region()
    queue.enqueue(r.filed(0, 0))
    with pytest.raises(BadInput) as refused:
        queue.reserve_next_many([r.place(), {**r.place(), "organization_id": "seven"}])
    assert refused.value.field == "place.organization_id"
    assert queue.lookup(r.number(0))["status"] == "queued"
    with pytest.raises(BadInput) as empty:
        queue.reserve_next_many([])
    assert empty.value.field == "places"


def test_claimant_highest_in_queue_wins_and_release_returns_the_child(queue):
    r = Region()
    queue.enqueue(r.filed(1, 0, preferred_organizations=[r.other_org]))
    queue.enqueue(r.filed(2, 1, birth_year=2021))
    queue.enqueue(r.filed(3, 2))
    place = r.place()
    assert queue.check_fit(place, r.number(1)) == {"fits": True, "reason": "ok",
                                                   "applicant_id": APPLICANT["id"]}
    assert queue.check_fit(place, r.number(2))["reason"] == "birth_year"
    assert queue.check_fit(place, r.number(2))["fits"] is False

    claimants = [r.number(3), r.number(2), r.number(1)]
    won = queue.reserve_claimant(place, claimants)
    assert won["application_number"] == r.number(1)  # need not have chosen the organisation
    assert queue.reserve_claimant(place, [r.number(3)])["application_number"] == r.number(1)
    assert queue.check_fit(r.place(), r.number(1))["reason"] == "offered"
    assert queue.reserve_claimant(r.place(), [r.number(2)]) is None

    released = queue.release_reservation(place["place_id"])
    assert released == {"place_id": place["place_id"], "application_number": r.number(1),
                        "released": True}
    assert queue.lookup(r.number(1))["status"] == "queued"
    assert queue.release_reservation(place["place_id"])["released"] is False
    # the same place can now go to someone again
    assert queue.reserve_next(place)["application_number"] == r.number(3)


# -- stop-list ---------------------------------------------------------------------------------------------
def test_postponed_application_returns_on_its_date_by_itself(queue, db_engine):
    r = Region()
    queue.enqueue(r.filed(1, 0))
    queue.enqueue(r.filed(2, 1))
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()

    with pytest.raises(Forbidden):
        queue.postpone(r.number(2), soon, {**APPLICANT, "id": "applicant:+77019999999"})
    with pytest.raises(RuleRefused) as err:
        queue.postpone(r.number(2), "2020-01-01", APPLICANT)
    assert err.value.field == "until"

    row = queue.postpone(r.number(2), soon, APPLICANT)
    assert row["status"] == "stop_listed"
    assert row["stop_list"]["reason"] == "postponed"
    assert row["stop_list"]["exits_at"] == dt.datetime.fromisoformat(soon).isoformat()
    assert row["queue_number"] == 2  # keeps its place while stop-listed
    assert queue.reserve_next(r.place())["application_number"] == r.number(1)
    assert queue.reserve_next(r.place()) is None  # the postponed child is skipped

    back = wait_for(lambda: in_status(queue, r.number(2), "queued"), timeout=15,
                    message="automatic exit")
    assert back["queue_number"] == 2
    assert back["stop_list"] is None
    assert journal_kinds(db_engine, r.number(2))[-2:] == ["stop_list_entered", "stop_list_left"]
    assert queue.reserve_next(r.place())["application_number"] == r.number(2)


def test_resume_keeps_the_original_position(queue):
    r = Region()
    for n in range(1, 4):
        queue.enqueue(r.filed(n, n))
    queue.postpone(r.number(2), "2099-01-01", APPLICANT)
    with pytest.raises(Conflict):
        queue.postpone(r.number(2), "2099-01-01", APPLICANT)
    queue.enqueue(r.filed(4, 10))
    row = queue.resume(r.number(2), APPLICANT)
    assert row["status"] == "queued"
    assert row["queue_number"] == 2
    assert row["filed_at"] == (T0 + dt.timedelta(minutes=2)).isoformat()
    with pytest.raises(Conflict):
        queue.resume(r.number(2), APPLICANT)

    # documents under check: only an officer takes it off
    queue.stop_list_enter(r.number(3), "documents_check", None, OFFICER)
    with pytest.raises(Conflict):
        queue.resume(r.number(3), APPLICANT)
    with pytest.raises(Forbidden):
        queue.stop_list_exit(r.number(3), APPLICANT)
    with pytest.raises(BadInput) as err:
        queue.stop_list_enter(r.number(1), "bad_manners", None, OFFICER)
    assert err.value.field == "reason"
    assert queue.stop_list_exit(r.number(3), OFFICER)["queue_number"] == 3


# -- events from applications and allocation --------------------------------------------------------------
def test_withdrawal_event_is_final(queue, publish):
    r = Region()
    queue.enqueue(r.filed(1, 0))
    queue.enqueue(r.filed(2, 1))
    place = r.place()
    assert queue.reserve_next(place)["application_number"] == r.number(1)
    publish("applications", "application_withdrawn",
            {"application_number": r.number(1), "withdrawn_at": T0.isoformat()})
    row = wait_for(lambda: in_status(queue, r.number(1), "withdrawn"), message="withdrawn")
    assert row["queue_number"] is None
    assert queue.lookup(r.number(2))["queue_number"] == 1
    with pytest.raises(Conflict):
        queue.resume(r.number(1), APPLICANT)
    with pytest.raises(Conflict):
        queue.postpone(r.number(1), "2099-01-01", APPLICANT)
    # the reservation stays until allocation closes it; the place is not handed out twice
    assert queue.reserve_next(place)["application_number"] == r.number(1)


def test_withdrawal_that_overtakes_the_filing_is_not_lost(queue, publish):
    r = Region()
    before = consumed("on_application_withdrawn", "ok")
    publish("applications", "application_withdrawn",
            {"application_number": r.number(1), "withdrawn_at": T0.isoformat()})
    wait_for(lambda: consumed("on_application_withdrawn", "ok") > before, message="handled")
    assert queue.enqueue(r.filed(1, 0))["status"] == "withdrawn"


def test_direction_life_cycle_moves_the_entry(queue, publish):
    r = Region()
    queue.enqueue(r.filed(1, 0))
    queue.enqueue(r.filed(2, 1))
    place = r.place()
    queue.reserve_next(place)
    publish("allocation", "direction_issued", direction(r.number(1), place, "issued", 1))
    publish("allocation", "direction_changed", direction(r.number(1), place, "enrolled", 2))
    row = wait_for(lambda: in_status(queue, r.number(1), "provided"), message="provided")
    assert row["provided"] is True
    assert row["queue_number"] is None
    assert queue.lookup(r.number(2))["queue_number"] == 1

    place2 = r.place()
    queue.reserve_next(place2)
    publish("allocation", "direction_issued", direction(r.number(2), place2, "issued", 1))
    publish("allocation", "direction_changed", direction(r.number(2), place2, "expired", 2))
    row = wait_for(lambda: in_status(queue, r.number(2), "stop_listed"), message="stop-listed")
    assert row["stop_list"]["reason"] == "direction_expired"
    assert row["stop_list"]["exits_at"] is None
    assert queue.reserve_next(r.place()) is None  # reservation closed, child stop-listed
    assert queue.resume(r.number(2), APPLICANT)["queue_number"] == 1


def test_a_batch_of_direction_events_moves_each_entry(queue, db_engine):
    """direction_changed events handled as one batch (their entries locked and read in one
    statement) move each entry as alone, also two events for one entry in the batch."""
    import types

    from services.queue import commands

    r = Region()
    for n in range(3):
        queue.enqueue(r.filed(n, n))
    places = [r.place() for _ in range(3)]
    queue.reserve_next_many(places)
    handler = types.SimpleNamespace(db=DatabaseAccess(db_engine, "queue"))

    def batch(event_type, events):
        payloads = [contracts.envelope("allocation", event_type, e) for e in events]
        return QueueService._on(handler, payloads, "allocation", event_type, f"on_{event_type}",
                                commands.direction_event, read_together=True)

    assert batch("direction_issued", [direction(r.number(n), places[n], "issued", 1)
                                      for n in range(3)]) == ["ok"] * 3
    assert batch("direction_changed", [
        direction(r.number(0), places[0], "enrolled", 2),
        direction(r.number(1), places[1], "declined", 2),
        direction(r.number(1), places[1], "declined", 2),  # the same snapshot again
        direction(r.number(2), places[2], "expired", 2),
    ]) == ["ok", "ok", "duplicate", "ok"]
    rows = [queue.lookup(r.number(n)) for n in range(3)]
    assert [row["status"] for row in rows] == ["provided", "stop_listed", "stop_listed"]
    assert [row["stop_list"]["reason"] for row in rows[1:]] == ["direction_declined",
                                                               "direction_expired"]
    assert [journal_kinds(db_engine, r.number(n)).count("stop_list_entered")
            for n in range(3)] == [0, 1, 1]


def test_redelivered_or_older_event_changes_nothing(queue, publish, db_engine):
    r = Region()
    queue.enqueue(r.filed(1, 0))
    place = r.place()
    queue.reserve_next(place)
    declined = publish("allocation", "direction_changed",
                       direction(r.number(1), place, "declined", 2))
    wait_for(lambda: queue.lookup(r.number(1))["status"] == "stop_listed", message="declined")
    row = queue.stop_list_exit(r.number(1), OFFICER)
    assert row["status"] == "queued"
    kinds = journal_kinds(db_engine, r.number(1))

    before = consumed("on_direction_changed", "duplicate")
    before_older = consumed("on_direction_issued", "duplicate")
    publish("allocation", "direction_changed", envelope=declined)  # the same event again
    publish("allocation", "direction_issued", direction(r.number(1), place, "issued", 1))  # older
    wait_for(lambda: consumed("on_direction_changed", "duplicate") > before, message="redelivery")
    wait_for(lambda: consumed("on_direction_issued", "duplicate") > before_older,
             message="older snapshot")
    after = queue.lookup(r.number(1))
    assert (after["status"], after["revision"]) == ("queued", row["revision"])
    assert journal_kinds(db_engine, r.number(1)) == kinds
