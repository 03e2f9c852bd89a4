"""The allocation service with the queue and the registry on real RabbitMQ and PostgreSQL:
release -> priority period -> direction, vacancies and claim pools, the direction's life cycle.

Every test makes its own organisation (registry ids are unique in the session database) and
its own application numbers, so tests never meet.
"""

import copy
import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import eventlet
import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

from services.allocation.service import AllocationService
from services.allocation.storage import load_calendar
from services.common.amqp import ConfirmingPublisher
from services.common.errors import BadInput, Conflict, Forbidden, RuleRefused
from services.queue.service import QueueService
from services.registry.service import RegistryService
from tests.helpers import random_name, wait_for

T0 = dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}


def applicant(n: int, tag: str) -> dict:
    return {"id": f"applicant:+7701{tag}{n:03d}", "role": "applicant", "organization_id": None,
            "request_id": None}


@pytest.fixture
def config(kezek_config):
    cfg = copy.deepcopy(kezek_config)
    cfg["KEZEK"].update({
        "ALLOCATION_TIMER_SECONDS": 0.2,
        "QUEUE_STOP_LIST_TIMER_SECONDS": 0.2,
        "CLAIM_POOL_MINUTES": 0.05,  # a 3 s claim window
    })
    return cfg


@pytest.fixture
def rpc_cluster(config, start_services):
    def start(services=(AllocationService, QueueService, RegistryService), **settings):
        cfg = copy.deepcopy(config)
        cfg["KEZEK"].update(settings)
        start_services(*services, config=cfg)
        return ClusterRpcProxy(cfg, timeout=30)

    return start


class SlowQueue:
    """Stands in for the queue: it answers reserve_next only after the priority period."""

    name = "queue"

    @rpc
    def reserve_next(self, place):
        eventlet.sleep(3)
        return None

    @rpc
    def release_reservation(self, place_id):
        return {"place_id": place_id, "application_number": None, "released": False}


class World:
    """One organisation with groups, and children in its district's queue."""

    def __init__(self, cluster, db_engine, capacity=20, enrolled=5):
        self.rpc = cluster
        self.db = db_engine
        self.tag = uuid.uuid4().hex[:6].upper()
        self.district = random_name("district")
        self.org = self.organization()
        self.staff = {"id": f"staff:{self.tag}", "role": "staff", "organization_id": self.org,
                      "request_id": None}
        self.group = self.add_group(capacity=capacity, enrolled=enrolled)

    def organization(self) -> int:
        org = self.rpc.registry.create_organization({
            "name": random_name("Balapan"), "address": "Abai 1", "district": self.district,
            "ownership": "state", "kind": "kindergarten", "languages": ["kk", "ru"],
            "monthly_fee_kzt": 0}, OFFICER)
        return org["id"]

    def add_group(self, org=None, capacity=20, enrolled=5, language="kk", birth_year=2022):
        group = self.rpc.registry.add_group(org or self.org, {
            "name": random_name("group"), "group_type": "general", "birth_year": birth_year,
            "language": language, "capacity": capacity, "enrolled": enrolled}, OFFICER)
        return group["id"]

    def number(self, n: int) -> str:
        return f"AL{self.tag}-{n:04d}"

    def enqueue(self, n: int, minutes: float = 0, **changes) -> str:
        data = {
            "application_number": self.number(n), "applicant_name": f"Applicant {n}",
            "child_name": f"Child {n}", "child_birth_date": "2022-05-01", "birth_year": 2022,
            "queue_type": "general", "language": "kk", "district": self.district,
            "preferred_organizations": [self.org], "desired_start": "2026-09-01",
            "filed_at": (T0 + dt.timedelta(minutes=minutes)).isoformat(), "benefit": None,
            "current_organization_id": None, "current_group_id": None,
            "applicant_id": applicant(n, self.tag)["id"],
        }
        data.update(changes)
        self.rpc.queue.enqueue(data)
        return data["application_number"]

    def release(self, places=1, group=None) -> list[str]:
        return self.rpc.allocation.release_places(self.org, group or self.group, places,
                                                  self.staff)["place_ids"]

    def place(self, place_id: str) -> dict:
        with self.db.connect() as conn:
            return dict(conn.execute(text(
                "SELECT * FROM allocation.places WHERE place_id = CAST(:p AS uuid)"),
                {"p": place_id}).mappings().one())

    def directions_of(self, place_id: str) -> list[dict]:
        """Every direction of a place, oldest first, as get_direction shows it."""
        with self.db.connect() as conn:
            numbers = conn.execute(text(
                "SELECT number FROM allocation.directions WHERE place_id = CAST(:p AS uuid) "
                "ORDER BY issued_at, number"), {"p": place_id}).scalars().all()
        return [self.rpc.allocation.get_direction(n) for n in numbers]

    def direction_for(self, place_id: str, timeout: float = 10) -> dict:
        """Wait for the place's open direction."""
        def issued():
            found = [d for d in self.directions_of(place_id) if d["status"] == "issued"]
            return found[0] if found else None
        return wait_for(issued, timeout, message=f"a direction for place {place_id}")

    def wait_status(self, place_id: str, status: str, timeout: float = 10) -> dict:
        return wait_for(lambda: (p := self.place(place_id))["status"] == status and p,
                        timeout, message=f"place {place_id} {status}")

    def handled(self, place_id: str) -> bool:
        """Has allocation handled the place's latest place_released event?"""
        with self.db.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM allocation.inbox i JOIN allocation.outbox o "
                "ON o.payload->>'event_id' = CAST(i.event_id AS text) "
                "WHERE o.routing_key = 'place_released' "
                "AND o.payload->'data'->>'place_id' = :p"), {"p": place_id}).scalar() > 0

    def queue_status(self, number: str) -> str:
        return self.rpc.queue.lookup(number)["status"]


@pytest.fixture
def world(rpc_cluster, db_engine):
    def make(capacity=20, enrolled=5, services=(AllocationService, QueueService, RegistryService),
             **settings):
        cluster = rpc_cluster(services, **settings)
        proxy = cluster.start()
        made.append(cluster)
        return World(proxy, db_engine, capacity, enrolled)

    made = []
    yield make
    for cluster in made:
        cluster.stop()


def working_days_later(issued_at: str, days: int) -> dt.datetime:
    return load_calendar().add_working_days(dt.datetime.fromisoformat(issued_at), days,
                                            ZoneInfo("Asia/Almaty"))


# -- release -> direction --------------------------------------------------------------------------

def test_release_directs_the_place_to_the_first_eligible_child_who_chose_it(world):
    w = world()
    # first in the queue, but chose another organisation: skipped in the priority period
    elsewhere = w.enqueue(1, minutes=0, preferred_organizations=[w.org + 10**6])
    other_language = w.enqueue(2, minutes=1, language="ru")
    first = w.enqueue(3, minutes=2)
    second = w.enqueue(4, minutes=3)

    [place_id] = w.release(1)
    direction = w.direction_for(place_id)

    assert direction["application_number"] == first
    assert direction["type"] == "priority"
    assert direction["status"] == "issued"
    assert direction["organization_id"] == w.org
    assert direction["child_name"] == "Child 3"
    assert (direction["birth_year"], direction["language"]) == (2022, "kk")
    assert direction["number"].startswith("D") and len(direction["number"]) == 10
    assert dt.datetime.fromisoformat(direction["expires_at"]) == \
        working_days_later(direction["issued_at"], 5)
    assert w.place(place_id)["status"] == "directed"
    wait_for(lambda: w.queue_status(first) == "offered", message="first child offered")
    assert [w.queue_status(n) for n in (elsewhere, other_language, second)] == ["queued"] * 3


def test_release_returns_place_ids_once_per_idempotency_key(world):
    w = world()
    key = f"release-{uuid.uuid4()}"
    first = w.rpc.allocation.release_places(w.org, w.group, 2, w.staff, idempotency_key=key)
    again = w.rpc.allocation.release_places(w.org, w.group, 2, w.staff, idempotency_key=key)
    assert again["place_ids"] == first["place_ids"] and len(first["place_ids"]) == 2
    assert again["release_id"] == first["release_id"]
    with w.db.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM allocation.places WHERE group_id = :g"),
                             {"g": w.group}).scalar()
    assert count == 2
    # the key names that release: used for another group, it is refused and releases nothing
    other = w.add_group()
    with pytest.raises(Conflict) as refused:
        w.rpc.allocation.release_places(w.org, other, 1, w.staff, idempotency_key=key)
    assert (refused.value.code, refused.value.field) == ("IDEMPOTENCY_KEY_REUSED",
                                                         "idempotency_key")
    with w.db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM allocation.places WHERE group_id = :g"),
                            {"g": other}).scalar() == 0


def test_place_with_no_eligible_child_becomes_a_vacancy_at_once(world):
    w = world()
    w.enqueue(1, preferred_organizations=[w.org + 10**6])  # fits, but did not choose it
    [place_id] = w.release(1)
    place = w.wait_status(place_id, "vacancy")
    assert place["vacancy_opened_at"] is not None
    assert place["direction_number"] is None
    assert w.directions_of(place_id) == []


def test_priority_period_end_turns_an_unallocated_place_into_a_vacancy(world):
    # the queue takes 3 s to answer; the priority period is over after 0.72 s
    w = world(services=(AllocationService, SlowQueue, RegistryService),
              PRIORITY_PERIOD_HOURS=0.0002)
    [place_id] = w.release(1)
    place = w.wait_status(place_id, "vacancy")
    assert place["vacancy_opened_at"] >= place["priority_ends_at"]
    # the late answer of the queue finds the place gone: the event is handled, nothing changes
    wait_for(lambda: w.handled(place_id), message="place_released handled")
    with w.db.connect() as conn:
        opened = conn.execute(text(
            "SELECT data FROM allocation.journal WHERE stream = :s AND kind = 'vacancy_opened'"),
            {"s": f"place:{place_id}"}).scalars().all()
    assert [o["why"] for o in opened] == ["priority period ended"]
    assert w.place(place_id)["revision"] == place["revision"]


def test_capacity_refusal_changes_nothing(world):
    w = world(capacity=4, enrolled=1)
    assert len(w.release(2)) == 2
    with pytest.raises(RuleRefused) as err:
        w.release(2)
    assert (err.value.code, err.value.field) == ("NO_FREE_CAPACITY", "places")
    assert len(w.release(1)) == 1  # exactly the one seat left
    with pytest.raises(RuleRefused):
        w.release(1)
    with pytest.raises(BadInput) as bad:
        w.release(0)
    assert bad.value.field == "places"
    stranger = {**w.staff, "organization_id": w.org + 1}
    with pytest.raises(Forbidden):
        w.rpc.allocation.release_places(w.org, w.group, 1, stranger)
    with w.db.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM allocation.places WHERE group_id = :g"),
                             {"g": w.group}).scalar()
    assert count == 3


def test_a_redelivered_place_released_event_issues_nothing_more(world, config):
    w = world()
    first = w.enqueue(1)
    w.enqueue(2, minutes=1)
    [place_id] = w.release(1)
    assert w.direction_for(place_id)["application_number"] == first
    with w.db.connect() as conn:
        payload = conn.execute(text(
            "SELECT payload FROM allocation.outbox WHERE routing_key = 'place_released' "
            "AND payload->'data'->>'place_id' = :p"), {"p": place_id}).scalar_one()
        handled = lambda: conn.execute(text(  # noqa: E731
            "SELECT count(*) FROM allocation.inbox WHERE event_id = CAST(:e AS uuid)"),
            {"e": payload["event_id"]}).scalar()
        duplicates = _consumed_duplicates(w)
        publisher = ConfirmingPublisher(config["AMQP_URI"])
        try:
            publisher.publish_batch([("allocation.events", "place_released", payload, {})])
        finally:
            publisher.close()
        assert handled() == 1
    # the redelivery is acknowledged as a duplicate: still one direction, to the same child
    wait_for(lambda: _consumed_duplicates(w) > duplicates, message="duplicate acknowledged")
    assert [d["application_number"] for d in w.directions_of(place_id)] == [first]


def _consumed_duplicates(w) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("kezek_messages_consumed_total", {
        "service": "allocation", "handler": "on_place_released", "outcome": "duplicate"}) or 0


# -- vacancy claims --------------------------------------------------------------------------------

def _vacancy(w) -> str:
    [place_id] = w.release(1)
    w.wait_status(place_id, "vacancy")
    return place_id


def test_pooled_claims_go_to_the_claimant_highest_in_the_queue(world):
    w = world()
    nowhere = [w.org + 10**6]  # they did not choose it: the place opens as a vacancy
    high = w.enqueue(1, minutes=0, preferred_organizations=nowhere)
    low = w.enqueue(2, minutes=5, preferred_organizations=nowhere)
    place_id = _vacancy(w)

    low_claim = w.rpc.allocation.claim_vacancy(place_id, low, applicant(2, w.tag))
    high_claim = w.rpc.allocation.claim_vacancy(place_id, high, applicant(1, w.tag))
    assert low_claim["status"] == high_claim["status"] == "pooled"
    assert low_claim["direction"] is None

    direction = w.direction_for(place_id, timeout=15)
    assert direction["application_number"] == high
    assert direction["type"] == "vacancy"
    assert w.queue_status(low) == "queued"
    with w.db.connect() as conn:
        outcomes = dict(conn.execute(text(
            "SELECT application_number, outcome FROM allocation.claims "
            "WHERE place_id = CAST(:p AS uuid)"), {"p": place_id}).all())
    assert outcomes == {high: "won", low: "lost"}


def test_after_the_window_the_first_valid_claim_wins_at_once(world):
    w = world(CLAIM_POOL_MINUTES=0)
    nowhere = [w.org + 10**6]
    first = w.enqueue(1, minutes=5, preferred_organizations=nowhere)
    higher_but_late = w.enqueue(2, minutes=0, preferred_organizations=nowhere)
    wrong_language = w.enqueue(3, language="ru", preferred_organizations=nowhere)
    place_id = _vacancy(w)

    with pytest.raises(RuleRefused) as err:
        w.rpc.allocation.claim_vacancy(place_id, wrong_language, applicant(3, w.tag))
    assert err.value.field == "application_number"
    with pytest.raises(Forbidden):  # somebody else's application
        w.rpc.allocation.claim_vacancy(place_id, first, applicant(2, w.tag))

    won = w.rpc.allocation.claim_vacancy(place_id, first, applicant(1, w.tag))
    assert won["status"] == "issued"
    assert won["direction"]["application_number"] == first
    assert won["direction"]["type"] == "vacancy"
    with pytest.raises(Conflict):
        w.rpc.allocation.claim_vacancy(place_id, higher_but_late, applicant(2, w.tag))
    assert w.place(place_id)["status"] == "directed"
    assert w.queue_status(higher_but_late) == "queued"


def test_only_an_applicant_may_claim(world):
    w = world()
    number = w.enqueue(1, preferred_organizations=[w.org + 10**6])
    place_id = _vacancy(w)
    with pytest.raises(Forbidden):
        w.rpc.allocation.claim_vacancy(place_id, number, w.staff)
    with pytest.raises(BadInput):
        w.rpc.allocation.claim_vacancy("not-a-place", number, applicant(1, w.tag))


# -- the direction's life cycle --------------------------------------------------------------------

def test_declined_direction_gives_the_place_to_the_next_child(world):
    w = world()
    first = w.enqueue(1, minutes=0)
    second = w.enqueue(2, minutes=1)
    [place_id] = w.release(1)
    direction = w.direction_for(place_id)
    assert direction["application_number"] == first

    with pytest.raises(Forbidden):
        w.rpc.allocation.decline(direction["number"], applicant(2, w.tag))
    declined = w.rpc.allocation.decline(direction["number"], applicant(1, w.tag))
    assert declined["status"] == "declined"
    assert declined["closed_at"] is not None
    with pytest.raises(Conflict):
        w.rpc.allocation.decline(direction["number"], applicant(1, w.tag))

    following = w.direction_for(place_id, timeout=15)
    assert following["application_number"] == second
    assert following["number"] != direction["number"]
    assert w.rpc.allocation.get_direction(direction["number"])["status"] == "declined"
    wait_for(lambda: w.queue_status(first) == "stop_listed", message="first stop-listed")
    with w.db.connect() as conn:
        kinds = conn.execute(text(
            "SELECT kind FROM allocation.journal WHERE stream = :s ORDER BY seq"),
            {"s": f"place:{place_id}"}).scalars().all()
    assert kinds == ["place_released", "place_released"]


def test_enrolment_closes_the_direction_and_fills_the_place(world):
    w = world()
    number = w.enqueue(1)
    [place_id] = w.release(1)
    direction = w.direction_for(place_id)
    with pytest.raises(Forbidden):
        w.rpc.allocation.enroll(direction["number"], {**w.staff, "organization_id": w.org + 1})
    enrolled = w.rpc.allocation.enroll(direction["number"], w.staff)
    assert enrolled["status"] == "enrolled"
    assert w.place(place_id)["status"] == "filled"
    wait_for(lambda: w.queue_status(number) == "provided", message="child provided")
    with pytest.raises(Conflict):
        w.rpc.allocation.revoke(direction["number"], "mistake", OFFICER)


def test_transfer_enrolment_releases_the_childs_old_place(world):
    w = world()
    old_org = w.organization()
    old_group = w.add_group(org=old_org, capacity=10, enrolled=10)
    number = w.enqueue(1, queue_type="transfer", current_organization_id=old_org,
                       current_group_id=old_group)
    [place_id] = w.release(1)
    direction = w.direction_for(place_id)
    assert direction["type"] == "transfer"

    w.rpc.allocation.enroll(direction["number"], w.staff)
    with w.db.connect() as conn:
        released = conn.execute(text(
            "SELECT p.organization_id, p.group_id, r.kind, r.source_direction "
            "FROM allocation.places p JOIN allocation.releases r USING (release_id) "
            "WHERE p.group_id = :g"), {"g": old_group}).all()
    assert [tuple(r) for r in released] == [(old_org, old_group, "transfer", direction["number"])]
    wait_for(lambda: w.queue_status(number) == "provided", message="child provided")


def test_revoke_needs_an_officer_and_a_reason(world):
    w = world()
    w.enqueue(1)
    [place_id] = w.release(1)
    direction = w.direction_for(place_id)
    with pytest.raises(Forbidden):
        w.rpc.allocation.revoke(direction["number"], "no documents", w.staff)
    with pytest.raises(BadInput) as err:
        w.rpc.allocation.revoke(direction["number"], "  ", OFFICER)
    assert err.value.field == "reason"
    revoked = w.rpc.allocation.revoke(direction["number"], "documents were forged", OFFICER)
    assert (revoked["status"], revoked["reason"]) == ("revoked", "documents were forged")
    # nobody else is queued: the place comes back, then opens as a vacancy
    w.wait_status(place_id, "vacancy")


def test_unused_direction_expires_and_the_place_goes_to_the_next_child(world):
    w = world(DIRECTION_VALID_WORKING_DAYS=0)  # a direction expires as soon as it is issued
    first = w.enqueue(1, minutes=0)
    second = w.enqueue(2, minutes=1)
    [place_id] = w.release(1)

    def both_directed():
        directions = w.directions_of(place_id)
        return len(directions) >= 2 and directions
    directions = wait_for(both_directed, 15, message="two directions")
    assert [d["application_number"] for d in directions[:2]] == [first, second]
    assert directions[0]["status"] == "expired"
    assert directions[0]["reason"] == "direction not used before expiry"
    wait_for(lambda: w.queue_status(first) == "stop_listed", message="first stop-listed")


# -- the commands alone, with the queue's answers scripted -----------------------------------------

def _scripted(db_engine):
    """Allocation's commands on the test database, for a group of an organisation that only
    the test knows: (db, rules, organisation id, group id, group, staff actor, tag)."""
    from services.allocation.domain import Rules
    from services.common.db import DatabaseAccess

    org, group_id = uuid.uuid4().int % 10**12 + 10**12, uuid.uuid4().int % 10**12 + 10**12
    group = {"id": group_id, "organization_id": org, "organization_name": "Scripted",
             "name": "g", "group_type": "general", "birth_year": 2022, "language": "kk",
             "capacity": 5, "enrolled": 0}
    staff = {"id": "staff:scripted", "role": "staff", "organization_id": org}
    return (DatabaseAccess(db_engine, "allocation"), Rules(calendar=load_calendar()), org,
            group_id, group, staff, uuid.uuid4().hex[:6])


def test_allocation_waits_until_the_queue_drops_a_declined_childs_reservation(db_engine):
    """After a decline the place is released again at once; the queue may still hand back the
    child who declined (its reservation is idempotent per place) until it has seen the decline.
    Allocation must wait for a fresh answer instead of directing the same child again."""
    from services.allocation import commands

    db, rules, org, group_id, group, staff, tag = _scripted(db_engine)
    first = {"application_number": f"SC{tag}-1", "applicant_id": "applicant:+1",
             "child_name": "First", "queue_type": "general"}
    second = {**first, "application_number": f"SC{tag}-2", "applicant_id": "applicant:+2",
              "child_name": "Second"}

    def released_events(place_id):
        with db_engine.connect() as conn:
            return conn.execute(text(
                "SELECT payload FROM allocation.outbox WHERE routing_key = 'place_released' "
                "AND payload->'data'->>'place_id' = :p ORDER BY id"),
                {"p": place_id}).scalars().all()

    [place_id] = commands.release_places(db, rules, org, group_id, 1, staff,
                                         get_group=lambda g: group)["place_ids"]
    try:
        [event] = released_events(place_id)
        assert commands.allocate_place(db, rules, event["event_id"], event["data"],
                                       reserve_next=lambda place: first) == "issued"
        with db_engine.connect() as conn:
            number = conn.execute(text(
                "SELECT direction_number FROM allocation.places WHERE place_id = CAST(:p AS uuid)"),
                {"p": place_id}).scalar()
        commands.decline(db, rules, number, {"id": "applicant:+1", "role": "applicant"})

        answers = iter([first, first, second])  # the queue catches up on the third call
        waits = []
        [_, again] = released_events(place_id)
        assert commands.allocate_place(db, rules, again["event_id"], again["data"],
                                       reserve_next=lambda place: next(answers),
                                       sleep=waits.append) == "issued"
        assert len(waits) == 2
        directions = [d["application_number"] for d in
                      (commands.get_direction(db, n) for n in _numbers_of(db_engine, place_id))]
        assert directions == [first["application_number"], second["application_number"]]
        # the same event again is a duplicate and asks the queue nothing
        assert commands.allocate_place(db, rules, again["event_id"], again["data"],
                                       reserve_next=lambda place: pytest.fail("asked")) == \
            "duplicate"
    finally:
        # these events describe scripted children the queue has never seen: keep them off the
        # broker (a relay of a later test would otherwise publish them)
        with db_engine.begin() as conn:
            conn.execute(text("UPDATE allocation.outbox SET sent_at = clock_timestamp() "
                              "WHERE sent_at IS NULL AND strpos(payload::text, :p) > 0"),
                         {"p": place_id})


def _numbers_of(db_engine, place_id: str) -> list[str]:
    with db_engine.connect() as conn:
        return conn.execute(text(
            "SELECT number FROM allocation.directions WHERE place_id = CAST(:p AS uuid) "
            "ORDER BY issued_at"), {"p": place_id}).scalars().all()


def test_a_batch_reserves_its_places_in_one_call_and_gives_back_what_it_did_not_use(db_engine):
    """Allocation handles a batch of place_released events together: the places are reserved
    in one queue call, each place takes its own entry (a direction each, or a vacancy when
    nobody eligible chose it), a reservation made for a place that then was not allocated (it
    moved on between the two reads) is given back to the queue, and an event delivered twice
    is handled once."""
    from services.allocation import commands

    db, rules, org, group_id, group, staff, tag = _scripted(db_engine)
    children = [{"application_number": f"SB{tag}-{n}", "applicant_id": f"applicant:+{n}",
                 "child_name": f"Child {n}", "queue_type": "general"} for n in range(3)]
    place_ids = commands.release_places(db, rules, org, group_id, 4, staff,
                                        get_group=lambda g: group)["place_ids"]
    try:
        with db_engine.connect() as conn:
            events = conn.execute(text(
                "SELECT payload FROM allocation.outbox WHERE routing_key = 'place_released' "
                "AND payload->'data'->>'place_id' = ANY(:p) ORDER BY id"),
                {"p": place_ids}).scalars().all()
        calls, released = [], []

        def reserve_many(places):
            calls.append([p["place_id"] for p in places])
            # the third place moves on once reserved, before it is allocated: an
            # officer-free stand-in, its priority period ended (the timer's job)
            with db_engine.begin() as conn:
                conn.execute(text("UPDATE allocation.places SET priority_ends_at = "
                                  "clock_timestamp() - interval '1 second' "
                                  "WHERE place_id = CAST(:p AS uuid)"), {"p": place_ids[2]})
            commands.end_priority_periods(db)
            return [children[0], children[1], children[2], None]  # nobody for the fourth

        batch = [*events, events[0]]  # the first event delivered twice
        outcomes = commands.allocate_batch(
            db, rules, batch, reserve_many, reserve_next=lambda place: pytest.fail("asked"),
            release_reservation=released.append)
        assert calls == [place_ids]  # one call, every place of the batch in order
        assert outcomes == ["issued", "issued", "stale", "vacancy", "duplicate"]
        assert released == [place_ids[2]]
        directions = [commands.get_direction(db, n) for p in place_ids
                      for n in _numbers_of(db_engine, p)]
        assert [(d["place_id"], d["application_number"], d["status"], d["type"])
                for d in directions] == [
            (place_ids[0], children[0]["application_number"], "issued", "priority"),
            (place_ids[1], children[1]["application_number"], "issued", "priority")]
        assert all(dt.datetime.fromisoformat(d["expires_at"]) ==
                   working_days_later(d["issued_at"], 5) for d in directions)
        with db_engine.connect() as conn:
            places = {str(r["place_id"]): r for r in conn.execute(text(
                "SELECT place_id, status, direction_number, revision FROM allocation.places "
                "WHERE place_id = ANY(CAST(:p AS uuid[]))"), {"p": place_ids}).mappings()}
            published = conn.execute(text(
                "SELECT routing_key, payload->'data' AS data FROM allocation.outbox "
                "WHERE routing_key IN ('direction_issued', 'place_changed') "
                "AND payload->'data'->>'place_id' = ANY(:p) ORDER BY id"),
                {"p": place_ids}).mappings().all()
        assert [(places[p]["status"], places[p]["direction_number"]) for p in place_ids] == [
            ("directed", directions[0]["number"]), ("directed", directions[1]["number"]),
            ("vacancy", None), ("vacancy", None)]
        # each direction and each place change is published once, as the rows now are
        assert [(e["routing_key"], e["data"].get("number") or e["data"]["place_id"])
                for e in published] == [
            ("place_changed", place_ids[2]),  # the timer's vacancy
            ("place_changed", place_ids[3]),  # the batch's vacancy
            ("direction_issued", directions[0]["number"]), ("place_changed", place_ids[0]),
            ("direction_issued", directions[1]["number"]), ("place_changed", place_ids[1])]
        assert [e["data"]["revision"] for e in published if e["routing_key"] ==
                "place_changed"] == [places[p]["revision"] for p in
                                     (place_ids[2], place_ids[3], place_ids[0], place_ids[1])]
        # the same batch again: every event is a duplicate or stale, and the queue is not asked
        again = commands.allocate_batch(
            db, rules, events, lambda places: pytest.fail("reserved again"),
            reserve_next=lambda place: pytest.fail("asked"), release_reservation=released.append)
        assert again == ["duplicate"] * 4
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("UPDATE allocation.outbox SET sent_at = clock_timestamp() "
                              "WHERE sent_at IS NULL AND payload->'data'->>'place_id' = ANY(:p)"),
                         {"p": place_ids})
