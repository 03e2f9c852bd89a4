"""Queue order and fit rules (services.queue.domain): no broker, no database."""

import datetime as dt

import pytest

from services.queue import domain

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def entry(number, minutes, tier="none", verified=False, status="queued", queue="D/general/2022",
          **more):
    return {"application_number": number, "filed_at": T0 + dt.timedelta(minutes=minutes),
            "claimed_tier": tier, "benefit_verified": verified, "status": status,
            "queue_name": queue, **more}


def numbers(entries):
    return {e["application_number"]: domain.queue_number(e, entries) for e in entries}


def test_verified_out_of_turn_filed_last_stands_first():
    entries = [entry("A-1", 0), entry("A-2", 5), entry("A-3", 10, "first_priority", True),
               entry("A-4", 20, "out_of_turn", True)]
    assert numbers(entries) == {"A-4": 1, "A-3": 2, "A-1": 3, "A-2": 4}


def test_unverified_claim_does_not_move_the_application():
    entries = [entry("A-1", 0), entry("A-2", 5), entry("A-3", 20, "out_of_turn", False)]
    assert numbers(entries) == {"A-1": 1, "A-2": 2, "A-3": 3}
    assert domain.effective_tier("out_of_turn", False) == "none"


def test_same_moment_is_ordered_by_application_number():
    entries = [entry("A-000012", 0), entry("A-000010", 0), entry("A-000011", 0)]
    assert numbers(entries) == {"A-000010": 1, "A-000011": 2, "A-000012": 3}


def test_stop_listed_keep_their_place_provided_and_withdrawn_leave():
    entries = [entry("A-1", 0, status="provided"), entry("A-2", 1, status="stop_listed"),
               entry("A-3", 2, status="withdrawn"), entry("A-4", 3, status="offered"),
               entry("A-5", 4)]
    assert numbers(entries) == {"A-1": None, "A-2": 1, "A-3": None, "A-4": 2, "A-5": 3}


def test_other_queues_do_not_count():
    entries = [entry("A-1", 0, queue="D/general/2021"), entry("A-2", 1, queue="E/general/2022"),
               entry("A-3", 2)]
    assert numbers(entries)["A-3"] == 1


def test_queue_name_is_district_type_and_birth_year():
    assert domain.queue_name("Almaly", "special", 2021) == "Almaly/special/2021"


PLACE = {"place_id": "p1", "organization_id": 7, "birth_year": 2022, "language": "kk",
         "group_type": "general"}


def child(**changes):
    base = {"status": "queued", "birth_year": 2022, "language": "kk", "queue_type": "general",
            "preferred_organizations": [3, 7]}
    return {**base, **changes}


@pytest.mark.parametrize("changes, group_type, reason", [
    ({}, "general", "ok"),
    ({"queue_type": "transfer"}, "general", "ok"),
    ({"queue_type": "special"}, "special", "ok"),
    ({"queue_type": "sanatorium"}, "sanatorium", "ok"),
    ({"queue_type": "special"}, "general", "group_type"),
    ({"queue_type": "general"}, "special", "group_type"),
    ({"queue_type": "transfer"}, "sanatorium", "group_type"),
    ({}, "short_stay", "group_type"),
    ({"birth_year": 2021}, "general", "birth_year"),
    ({"language": "ru"}, "general", "language"),
    ({"status": "stop_listed"}, "general", "stop_listed"),
    ({"status": "offered"}, "general", "offered"),
    ({"status": "withdrawn"}, "general", "withdrawn"),
    ({"status": "provided"}, "general", "provided"),
])
def test_fit_rules(changes, group_type, reason):
    place = {**PLACE, "group_type": group_type}
    assert domain.fit_reason(child(**changes), place, require_preferred=False) == reason


def test_priority_period_needs_the_organisation_chosen_a_claim_does_not():
    other_org = child(preferred_organizations=[3, 4])
    assert domain.fit_reason(other_org, PLACE, require_preferred=True) == "not_preferred"
    assert domain.fit_reason(other_org, PLACE, require_preferred=False) == "ok"
    assert domain.fit_reason(child(), PLACE, require_preferred=True) == "ok"


def test_who_may_leave_the_stop_list_by_themselves():
    for reason in ("postponed", "direction_declined", "direction_expired", "direction_revoked"):
        assert domain.can_resume("stop_listed", reason)
    assert not domain.can_resume("stop_listed", "documents_check")
    assert not domain.can_resume("queued", None)
    assert domain.can_postpone("queued")
    assert not domain.can_postpone("offered")
    assert not domain.can_enter_stop_list("withdrawn")


def test_until_as_a_date_means_local_midnight():
    moment = domain.parse_until("2027-08-01")
    assert moment.astimezone(dt.UTC) == dt.datetime(2027, 7, 31, 19, 0,
                                                             tzinfo=dt.UTC)
    assert domain.parse_until("2027-08-01T10:00:00+00:00") == dt.datetime(
        2027, 8, 1, 10, tzinfo=dt.UTC)
    assert domain.parse_until(None) is None
    with pytest.raises(ValueError):
        domain.parse_until("2027-08-01T10:00:00")  # no offset: ambiguous
    with pytest.raises(ValueError):
        domain.parse_until("next week")


def test_snapshot_shows_the_counted_tier_and_the_stop_list_episode():
    row = {"application_number": "A-1", "revision": 3, "queue_name": "D/general/2022",
           "district": "D", "queue_type": "general", "birth_year": 2022, "language": "kk",
           "status": "stop_listed", "claimed_tier": "out_of_turn", "benefit_verified": False,
           "filed_at": T0, "stop_entered_at": T0, "stop_exits_at": None,
           "stop_reason": "direction_declined", "applicant_name": "X", "child_name": "Y",
           "preferred_organizations": [3]}
    snap = domain.snapshot(row)
    assert snap["benefit_tier"] == "none"
    assert snap["stop_list"] == {"entered_at": "2025-03-01T09:00:00+00:00", "exits_at": None,
                                 "reason": "direction_declined"}
    assert snap["filed_at"] == "2025-03-01T09:00:00+00:00"
    from services.common.contracts import ENTRY_FIELDS
    assert set(ENTRY_FIELDS) <= set(snap)
