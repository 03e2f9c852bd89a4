"""Property-based test of allocation against the real database: for random sequences of
filings, benefit decisions, stop-list moves, withdrawals, releases, claims, claim-pool
resolutions, declines, expiries, revocations and enrolments, nobody who stands higher in the
queue and fits a place is passed over for it (no justified envy), no two open directions share
a place or a child, and queue numbers stay 1..n in every queue.

No broker runs: the rules call services.queue.commands and services.allocation.commands
directly (plain callables stand in for the RPC proxies) and the test plays the broker itself,
delivering each allocation outbox event, in outbox order, to the handler that would get it
(allocation.allocate_place for place_released, queue.direction_event for direction_issued and
direction_changed); at the end of an example its events are marked sent, so no outbox relay of
a later test publishes them. A plain-Python model (tests/property/oracle.py) says
who must get each place before the step runs; the database must agree after it.

Time cannot be moved on the database clock, so the rules move it the other way: directions are
issued with 0 working days of validity (due at once: an expiry is allocation's own expiry step
for that direction), and a claim pool is resolved, or a late claim made, with a claim window of
0 (the window has closed). Leaving the stop-list on its exit date (a timer) is not exercised.
Each example has its own district and organisation ids, so examples and other tests never meet.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import uuid
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)
from sqlalchemy import text

from services.allocation import commands as allocation
from services.allocation.domain import EXPIRED, Rules, WorkingCalendar
from services.common import contracts
from services.common.db import DatabaseAccess
from services.common.errors import Conflict, DomainError, Forbidden, RuleRefused
from services.queue import commands as queue
from services.queue import domain as queue_domain
from services.queue import storage as queue_storage
from tests.property import oracle

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}
STRANGER = {"id": "applicant:+77079999999", "role": "applicant", "organization_id": None,
            "request_id": None}
# one example's groups: (organisation, birth year, language, group type); children choose
# among organisations 0 and 1 only, so organisation 2's places all become vacancies
GROUPS = (
    (0, 2022, "kk", "general"),
    (0, 2022, "ru", "general"),
    (1, 2022, "kk", "general"),
    (1, 2021, "kk", "special"),
    (2, 2022, "kk", "general"),
)
CAPACITY = 4
# directions are due for expiry as soon as they are issued; claims made now are pooled
RULES = Rules(calendar=WorkingCalendar(), direction_valid_working_days=0,
              claim_pool=dt.timedelta(minutes=10))
WINDOW_CLOSED = dataclasses.replace(RULES, claim_pool=dt.timedelta(0))
PICK = st.integers(0, 10_000)  # an index into a list of the model, taken modulo its length
# children drawn so that most fit some group: the first (simplest) choice is the common one
CHILDREN = st.fixed_dictionaries({
    "birth_year": st.sampled_from((2022, 2022, 2022, 2022, 2021)),
    "language": st.sampled_from(("kk", "kk", "kk", "ru")),
    "queue_type": st.sampled_from(("general", "general", "transfer", "special")),
    "chosen": st.sampled_from(([0, 1], [0], [1], [], [1, 0])),
    "tier": st.sampled_from(("none", "none", "first_priority", "out_of_turn")),
    # a benefit already verified when the application reached the queue (imports)
    "verified": st.sampled_from((False, False, True)),
    "minute": st.integers(0, 12),
})

MACHINE_SETTINGS = settings(
    max_examples=25, stateful_step_count=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# what the examples did (printed by the test: pytest -s shows it)
STATS: collections.Counter = collections.Counter()


def note(what: str) -> None:
    if currently_in_test_context():  # not in the plain reproducer test below
        event(what)
    STATS[what] += 1


def outcome(call: Callable[[], Any]) -> tuple[Any, DomainError | None]:
    """(result, None) or (None, the domain error it raised)."""
    try:
        return call(), None
    except DomainError as exc:
        return None, exc


class AllocationWorld(RuleBasedStateMachine):
    engine = None  # set by the test
    # a child whose direction was declined, expired or revoked may come back to the queue
    requeue_after_closed_direction = True

    def __init__(self) -> None:
        super().__init__()
        self.queue_db = DatabaseAccess(self.engine, "queue")
        self.alloc_db = DatabaseAccess(self.engine, "allocation")
        self.tag = uuid.uuid4().hex[:8].upper()
        self.district = f"property-{self.tag}"
        base = uuid.uuid4().int % 10**12 + 10**13
        self.orgs = [base, base + 1, base + 2]
        self.groups = [{
            "id": base + 10 + g, "organization_id": self.orgs[o], "name": f"group {g}",
            "organization_name": f"Org {self.tag} {o}", "district": self.district,
            "ownership": "state", "address": "Abai 1", "group_type": group_type,
            "birth_year": birth_year, "language": language, "capacity": CAPACITY,
        } for g, (o, birth_year, language, group_type) in enumerate(GROUPS)]
        # the model: queue entries (oracle's fields), places and directions
        self.entries: list[dict[str, Any]] = []
        self.places: dict[str, dict[str, Any]] = {}
        self.directions: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            self.alloc_mark = self.alloc_start = conn.execute(
                text("SELECT coalesce(max(id), 0) FROM allocation.outbox")).scalar()
            self.queue_start = conn.execute(
                text("SELECT coalesce(max(id), 0) FROM queue.outbox")).scalar()

    # -- the services' calls to each other, without a broker ---------------------------------
    def reserve_next(self, place: dict) -> dict | None:
        return queue.reserve_next(self.queue_db, place)

    def reserve_claimant(self, place: dict, numbers: list[str]) -> dict | None:
        return queue.reserve_claimant(self.queue_db, place, numbers)

    def check_fit(self, place: dict, number: str) -> dict:
        return queue.check_fit(self.queue_db, place, number)

    def release_reservation(self, place_id: str) -> dict:
        return queue.release_reservation(self.queue_db, place_id)

    def get_group(self, group_id: int) -> dict | None:
        for g, group in enumerate(self.groups):
            if group["id"] == int(group_id):
                # the registry counts enrolled children from place_changed (filled places)
                filled = sum(1 for p in self.places.values()
                             if p["group"] == g and p["status"] == "filled")
                return {**group, "enrolled": filled}
        return None

    # -- the broker ---------------------------------------------------------------------------
    def pump(self) -> None:
        """Deliver allocation's new events in outbox order until none is left."""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT id, payload FROM allocation.outbox WHERE id > :m ORDER BY id"),
                    {"m": self.alloc_mark}).all()
            if not rows:
                return
            for row in rows:
                self.alloc_mark = row.id
                self.deliver(row.payload)

    def teardown(self) -> None:
        """Mark this example's events sent, so that no outbox relay of a later test in the
        session publishes them to services that never heard of these children."""
        if self.engine is None:
            return
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE allocation.outbox SET sent_at = clock_timestamp() WHERE id > :s "
                "AND sent_at IS NULL AND (strpos(payload::text, :t) > 0 "
                "OR payload->>'target' LIKE ANY(CAST(:p AS text[])))"),
                {"s": self.alloc_start, "t": self.tag,
                 "p": [f"%{p}%" for p in self.places] or ["-"]})
            conn.execute(text(
                "UPDATE queue.outbox SET sent_at = clock_timestamp() WHERE id > :s "
                "AND sent_at IS NULL AND strpos(payload::text, :t) > 0"),
                {"s": self.queue_start, "t": self.tag})

    def deliver(self, payload: dict) -> None:
        source, event_type = payload.get("source"), payload.get("event_type")
        data = payload.get("data") or {}
        if source != "allocation" or int(data.get("organization_id") or 0) not in self.orgs:
            return  # place_changed for the registry, audit records, or not this example's
        if event_type == "place_released":
            self.allocate(payload["event_id"], contracts.parse(payload, source, event_type))
        elif event_type in ("direction_issued", "direction_changed"):
            data = contracts.parse(payload, source, event_type)
            queue.direction_event(self.queue_db, data,
                                  event=(f"queue.on_{event_type}", payload["event_id"]))
            self.follow_direction(data)

    def allocate(self, event_id: str, data: dict) -> None:
        """place_released: the place must go to the child standing highest among those queued
        who fit it and chose its organisation, or become a vacancy if there is none."""
        place = self.places[data["place_id"]]
        expected = oracle.first_eligible(self.entries, place, chosen_required=True)
        passed_over = [(e["application_number"], oracle.standing(e)) for e in self.entries
                       if oracle.fits(e, place, chosen_required=True)]
        result = allocation.allocate_place(
            self.alloc_db, RULES, event_id, data, reserve_next=self.reserve_next,
            release_reservation=self.release_reservation, sleep=lambda seconds: None)
        note(f"place released -> {result}")
        if expected is None:
            assert result == "vacancy", f"nobody fits {place}, yet allocation says {result}"
            place.update(status="vacancy", pooled=[])
            return
        assert result == "issued", f"{expected['application_number']} fits {place}: {result}"
        direction = self.direction_of(place["place_id"])
        assert direction["application_number"] == expected["application_number"], (
            f"justified envy: place {place} went to {direction['application_number']}, "
            f"while those who fit stand {sorted(passed_over, key=lambda x: x[1])}")
        assert direction["type"] == ("transfer" if expected["queue_type"] == "transfer"
                                     else "priority")
        self.issued(place, expected, direction["number"], direction["type"])

    def issued(self, place: dict, entry: dict, number: str, kind: str) -> None:
        entry["status"] = "offered"  # the reservation offers the entry in the same step
        place.update(status="directed", direction=number, pooled=[])
        self.directions[number] = {"number": number, "place_id": place["place_id"],
                                   "application_number": entry["application_number"],
                                   "status": "issued", "type": kind}

    def follow_direction(self, data: dict) -> None:
        """What the queue does with a direction's news (commands.direction_event)."""
        entry = self.entry(data["application_number"])
        if entry["status"] not in ("queued", "offered"):
            return  # withdrawn is final
        if data["status"] == "issued":
            entry["status"] = "offered"
        elif data["status"] == "enrolled":
            entry["status"] = "provided"
        else:
            entry.update(status="stop_listed", closed_direction=True,
                         stop_reason=queue_domain.DIRECTION_STOP_REASONS[data["status"]])

    def direction_of(self, place_id: str) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(text(
                "SELECT d.* FROM allocation.places p JOIN allocation.directions d "
                "ON d.number = p.direction_number WHERE p.place_id = CAST(:p AS uuid)"),
                {"p": place_id}).mappings().one())

    # -- model lookups ------------------------------------------------------------------------
    def entry(self, number: str) -> dict:
        return next(e for e in self.entries if e["application_number"] == number)

    def pick(self, items: list, i: int):
        return items[i % len(items)]

    def applicant(self, entry: dict) -> dict:
        return {"id": entry["applicant_id"], "role": "applicant", "organization_id": None,
                "request_id": None}

    def open_directions(self) -> list[dict]:
        return [d for d in self.directions.values() if d["status"] == "issued"]

    # -- applications -------------------------------------------------------------------------
    @initialize(children=st.lists(CHILDREN, min_size=4, max_size=10))
    def file_some(self, children):
        for child in children:
            self.file(**child)

    @rule(child=CHILDREN)
    def file_one(self, child):
        self.file(**child)

    def file(self, birth_year, language, queue_type, chosen, tier, minute, verified=False):
        n = len(self.entries) + 1
        number = f"P{self.tag}-{n:04d}"
        entry = {
            "application_number": number, "applicant_id": f"applicant:+7700{self.tag}{n:03d}",
            "queue_name": queue_domain.queue_name(self.district, queue_type, birth_year),
            "queue_type": queue_type, "birth_year": birth_year, "language": language,
            "preferred_organizations": [self.orgs[c] for c in chosen],
            "filed_at": T0 + dt.timedelta(minutes=minute), "claimed_tier": tier,
            "benefit_verified": verified and tier != "none",
            "decided": tier == "none" or verified, "status": "queued",
            "stop_reason": None, "closed_direction": False,
        }
        result = queue.enqueue(self.queue_db, {
            "application_number": number, "applicant_id": entry["applicant_id"],
            "applicant_name": f"Applicant {n}", "child_name": f"Child {n}",
            "child_birth_date": f"{birth_year}-04-01", "birth_year": birth_year,
            "queue_type": queue_type, "language": language, "district": self.district,
            "preferred_organizations": entry["preferred_organizations"],
            "desired_start": "2026-09-01", "filed_at": entry["filed_at"].isoformat(),
            "benefit": None if tier == "none" else {"category": "disability", "tier": tier,
                                                    "verified": verified},
            "current_organization_id": None, "current_group_id": None,
        })
        self.entries.append(entry)
        assert result["status"] == "queued"
        assert result["queue_number"] == oracle.expected_numbers(self.entries)[number]
        self.pump()

    @precondition(lambda self: any(not e["decided"] for e in self.entries))
    @rule(i=PICK, approved=st.booleans())
    def verify_benefit(self, i, approved):
        entry = self.pick([e for e in self.entries if not e["decided"]], i)
        queue.benefit_verified(self.queue_db, {
            "application_number": entry["application_number"], "approved": approved,
            "tier": entry["claimed_tier"], "category": "disability", "note": None})
        entry["decided"] = True
        if entry["status"] != "withdrawn":
            entry["benefit_verified"] = approved
        self.pump()

    # -- the stop-list and withdrawal --------------------------------------------------------
    @precondition(lambda self: self.entries)
    @rule(i=PICK, action=st.sampled_from(("enter", "postpone", "exit", "exit", "resume",
                                          "resume", "withdraw")),
          reason=st.sampled_from(queue_domain.OFFICER_STOP_REASONS))
    def applicant_or_officer(self, i, action, reason):
        """An officer moves an entry on or off the stop-list, the applicant postpones or
        resumes, or the application is withdrawn."""
        choices = self.entries
        if action in ("exit", "resume") and not self.requeue_after_closed_direction:
            # while the stale-reservation bug is open (test_a_child_may_get_a_place_again_
            # after_its_direction_to_it_was_closed), such a child is not returned to the queue
            choices = [e for e in choices if not e["closed_direction"]]
        if action == "exit" and any(e["status"] == "stop_listed" for e in choices):
            choices = [e for e in choices if e["status"] == "stop_listed"]
        if not choices:
            return
        entry = self.pick(choices, i)
        number, status = entry["application_number"], entry["status"]
        if action == "withdraw":
            queue.application_withdrawn(self.queue_db, {"application_number": number,
                                                        "withdrawn_at": T0.isoformat()})
            # an issued direction stays out: it is declined, expires or is revoked as usual
            entry.update(status="withdrawn", stop_reason=None)
            self.pump()
            return
        until = (dt.date.today() + dt.timedelta(days=60)).isoformat()
        allowed, call, after = {
            "enter": (status == "queued", lambda: queue.stop_list_enter(
                self.queue_db, number, reason, None, OFFICER), ("stop_listed", reason)),
            "postpone": (status == "queued", lambda: queue.postpone(
                self.queue_db, number, until, self.applicant(entry)),
                ("stop_listed", "postponed")),
            "exit": (status == "stop_listed", lambda: queue.stop_list_exit(
                self.queue_db, number, OFFICER), ("queued", None)),
            "resume": (queue_domain.can_resume(status, entry["stop_reason"]),
                       lambda: queue.resume(self.queue_db, number, self.applicant(entry)),
                       ("queued", None)),
        }[action]
        result, error = outcome(call)
        if allowed:
            assert error is None, error
            assert result["status"] == after[0]
            entry.update(status=after[0], stop_reason=after[1])
        else:
            assert isinstance(error, Conflict), (entry, result, error)
        self.pump()

    # -- places -------------------------------------------------------------------------------
    @rule(g=st.integers(0, len(GROUPS) - 1), count=st.integers(1, 2))
    def release(self, g, count):
        group = self.groups[g]
        staff = {"id": f"staff:{self.tag}", "role": "staff",
                 "organization_id": group["organization_id"], "request_id": None}
        free = CAPACITY - sum(1 for p in self.places.values() if p["group"] == g)
        result, error = outcome(lambda: allocation.release_places(
            self.alloc_db, RULES, group["organization_id"], group["id"], count, staff,
            get_group=self.get_group))
        if count > free:
            assert isinstance(error, RuleRefused) and error.code == "NO_FREE_CAPACITY", error
            return
        assert error is None, error
        assert len(result["place_ids"]) == count
        for place_id in result["place_ids"]:
            self.places[place_id] = {
                "place_id": place_id, "group": g, "organization_id": group["organization_id"],
                "birth_year": group["birth_year"], "language": group["language"],
                "group_type": group["group_type"], "status": "priority", "direction": None,
                "pooled": []}
        self.pump()

    # -- vacancy claims -----------------------------------------------------------------------
    @precondition(lambda self: self.places and self.entries)
    @rule(p=PICK, i=PICK, late=st.booleans(), aim=st.sampled_from((True, True, False)),
          own=st.sampled_from((True, True, True, False)), claimants=st.integers(1, 3))
    def claim(self, p, i, late, aim, own, claimants):
        """Children claim a place: within the claim window each claim is pooled; a late claim
        first lets the pooled claims be settled (highest in the queue wins), then the first
        valid claim wins. ``aim``: a vacancy and children who may take it, when there are any
        (else any place and child)."""
        places = list(self.places.values())  # in release order: replayable
        if aim and any(x["status"] == "vacancy" for x in places):
            places = [x for x in places if x["status"] == "vacancy"]
        place = self.pick(places, p)
        entries = self.entries
        if aim and any(oracle.fits(e, place, chosen_required=False) for e in entries):
            entries = [e for e in entries if oracle.fits(e, place, chosen_required=False)]
        for k in range(1 if late else min(claimants, len(entries))):
            self.claim_one(place, self.pick(entries, i + k), late, own)
        self.pump()

    def claim_one(self, place: dict, entry: dict, late: bool, own: bool) -> None:
        number = entry["application_number"]
        result, error = outcome(lambda: allocation.claim_vacancy(
            self.alloc_db, WINDOW_CLOSED if late else RULES, place["place_id"], number,
            self.applicant(entry) if own else STRANGER, check_fit=self.check_fit,
            reserve_claimant=self.reserve_claimant,
            release_reservation=self.release_reservation))
        note(f"claim ({'late' if late else 'in window'}) -> "
             f"{result['status'] if result else type(error).__name__}")
        if place["status"] != "vacancy":
            assert isinstance(error, Conflict) and error.code == "PLACE_NOT_VACANT", error
        elif not own:
            assert isinstance(error, Forbidden), error
        elif not oracle.fits(entry, place, chosen_required=False):
            assert isinstance(error, RuleRefused) and error.code == "DOES_NOT_FIT", error
        elif not late:
            assert error is None and result["status"] == "pooled", (result, error)
            if number not in place["pooled"]:
                place["pooled"].append(number)
        else:
            winner = self.settle_pool(place)
            if winner is None:
                assert error is None and result["status"] == "issued", (result, error)
                direction = result["direction"]
                assert direction["application_number"] == number
                self.issued(place, entry, direction["number"], direction["type"])
            elif winner is entry:
                assert error is None and result["status"] == "issued", (result, error)
                assert result["direction"]["number"] == place["direction"]
            else:
                assert isinstance(error, Conflict) and error.code == "PLACE_NOT_VACANT", error

    @precondition(lambda self: any(p["pooled"] for p in self.places.values()))
    @rule(p=PICK)
    def resolve_pool(self, p):
        """The claim window has closed: the timer settles the pool."""
        place = self.pick([x for x in self.places.values() if x["pooled"]], p)
        direction = allocation.resolve_pool(
            self.alloc_db, WINDOW_CLOSED, place["place_id"], self.reserve_claimant,
            self.release_reservation, wait=True)
        winner = self.settle_pool(place)
        note(f"pool resolved -> {'no winner' if winner is None else 'issued'}")
        if winner is None:
            assert direction is None, direction
        else:
            assert direction is not None and direction["number"] == place["direction"]
        self.pump()

    def settle_pool(self, place: dict) -> dict | None:
        """Model of a pool's resolution: the pooled claimant standing highest among those who
        still fit gets the place (checked against the direction issued)."""
        claimants = [self.entry(n) for n in place["pooled"]]
        winner = oracle.first_eligible(claimants, place, chosen_required=False)
        place["pooled"] = []
        if winner is not None:
            direction = self.direction_of(place["place_id"])
            standings = [(e["application_number"], oracle.standing(e), e["status"])
                         for e in claimants]
            assert direction["application_number"] == winner["application_number"], (
                f"claim pool of {place['place_id']} went to "
                f"{direction['application_number']}, not to {winner['application_number']}: "
                f"{standings}")
            self.issued(place, winner, direction["number"], direction["type"])
        return winner

    # -- a direction's life -------------------------------------------------------------------
    def close(self, i: int, status: str, call: Callable[[dict], Any]) -> None:
        direction = self.pick(self.open_directions(), i)
        result = call(direction)
        note(f"direction {status}")
        assert result["status"] == status and result["number"] == direction["number"]
        direction["status"] = status
        place = self.places[direction["place_id"]]
        if status == "enrolled":
            place.update(status="filled")
        else:  # the place is released again: a new priority period, allocated in pump()
            place.update(status="priority", direction=None)
        self.pump()

    @precondition(lambda self: self.open_directions())
    @rule(i=PICK, action=st.sampled_from(("decline", "decline", "expire", "revoke", "enroll")))
    def direction_closes(self, i, action):
        """The applicant declines, the direction expires (allocation's expiry step for this
        one direction: expire_due itself takes every due direction of the session database),
        an officer revokes it, or the organisation enrols the child."""
        def call(d):
            if action == "decline":
                return allocation.decline(self.alloc_db, RULES, d["number"],
                                          self.applicant(self.entry(d["application_number"])))
            if action == "expire":
                return allocation._close(self.alloc_db, RULES, d["number"], EXPIRED,
                                         "direction not used before expiry", lambda row: None,
                                         None, system=True)
            if action == "revoke":
                return allocation.revoke(self.alloc_db, RULES, d["number"],
                                         "documents do not match", OFFICER)
            staff = {"id": f"staff:{self.tag}", "role": "staff", "request_id": None,
                     "organization_id": self.places[d["place_id"]]["organization_id"]}
            return allocation.enroll(self.alloc_db, RULES, d["number"], staff,
                                     get_group=self.get_group)
        self.close(i, {"decline": "declined", "expire": "expired", "revoke": "revoked",
                       "enroll": "enrolled"}[action], call)

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def queue_matches_the_model_and_numbers_have_no_gaps(self):
        numbers, statuses = {}, {}
        with self.queue_db.read() as tx:
            rows = tx.execute("SELECT * FROM queue.entries WHERE district = :d",
                              {"d": self.district}).mappings().all()
            for row in rows:
                statuses[row["application_number"]] = (row["status"], row["stop_reason"])
                # the service's own count (lookup and enqueue answer with it)
                numbers[row["application_number"]] = queue_storage.queue_number(tx, row)
        assert statuses == {e["application_number"]: (e["status"], e["stop_reason"])
                            for e in self.entries}
        assert numbers == oracle.expected_numbers(self.entries)
        queues: dict[str, list[int]] = {}
        for e in self.entries:
            if numbers[e["application_number"]] is not None:
                queues.setdefault(e["queue_name"], []).append(numbers[e["application_number"]])
        for name, got in queues.items():
            assert sorted(got) == list(range(1, len(got) + 1)), (name, got)

    @invariant()
    def one_open_direction_per_place_and_per_child(self):
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT number, CAST(place_id AS text) AS place_id, application_number, status "
                "FROM allocation.directions WHERE place_id = ANY(CAST(:p AS uuid[]))"),
                {"p": list(self.places)}).mappings().all()
            places = dict(conn.execute(text(
                "SELECT CAST(place_id AS text), status FROM allocation.places "
                "WHERE place_id = ANY(CAST(:p AS uuid[]))"), {"p": list(self.places)}).all())
            reservations = conn.execute(text(
                "SELECT place_id, application_number, direction_number FROM queue.reservations "
                "WHERE status = 'open' AND place_id = ANY(:p)"),
                {"p": list(self.places)}).mappings().all()
        open_ = [r for r in rows if r["status"] == "issued"]
        assert len({r["place_id"] for r in open_}) == len(open_), "a place has two directions"
        assert len({r["application_number"] for r in open_}) == len(open_), \
            "a child has two open directions"
        assert {r["number"]: r["status"] for r in rows} == \
            {d["number"]: d["status"] for d in self.directions.values()}
        assert places == {p: x["status"] for p, x in self.places.items()}
        # a place is directed exactly while its direction is open
        assert {r["place_id"] for r in open_} == \
            {p for p, status in places.items() if status == "directed"}
        # every child offered a place holds its open direction, and the queue holds no
        # reservation that did not become a direction
        holders = {r["application_number"] for r in open_}
        offered = {e["application_number"] for e in self.entries if e["status"] == "offered"}
        assert offered <= holders
        assert all(self.entry(n)["status"] in ("offered", "withdrawn") for n in holders)
        assert {(r["place_id"], r["application_number"], r["direction_number"])
                for r in reservations} == \
            {(r["place_id"], r["application_number"], r["number"]) for r in open_}


def test_nobody_who_stands_higher_and_fits_is_passed_over(db_engine):
    AllocationWorld.engine = db_engine
    STATS.clear()
    try:
        run_state_machine_as_test(AllocationWorld, settings=MACHINE_SETTINGS)
    finally:
        AllocationWorld.engine = None
        print(f"allocation machine: {dict(sorted(STATS.items()))}")


def test_a_child_may_get_a_place_again_after_its_direction_to_it_was_closed(db_engine):
    """A declines the place, B gets it, A resumes (keeping the filing moment, ahead of B),
    B declines: the place is released again and must go to A, first in the queue."""
    AllocationWorld.engine = db_engine
    world = AllocationWorld()
    try:
        world.requeue_after_closed_direction = True
        child = {"birth_year": 2022, "language": "kk", "queue_type": "general",
                 "chosen": [0], "tier": "none"}
        world.file(**child, minute=0)  # A
        world.file(**child, minute=1)  # B
        a, b = world.entries
        world.release(g=0, count=1)
        [first] = world.open_directions()
        assert first["application_number"] == a["application_number"]
        world.direction_closes(i=0, action="decline")
        [second] = world.open_directions()
        assert second["application_number"] == b["application_number"]
        world.applicant_or_officer(i=0, action="resume", reason="postponed")
        assert a["status"] == "queued"
        world.direction_closes(i=0, action="decline")  # RuntimeError from allocate_place
        [third] = world.open_directions()
        assert third["application_number"] == a["application_number"]
        assert third["place_id"] == first["place_id"]
    finally:
        world.teardown()
        AllocationWorld.engine = None
