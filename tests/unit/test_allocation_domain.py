"""Allocation rules without a broker or a database: working days, claim pools, who may act."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.allocation import domain
from services.allocation.domain import Rules, WorkingCalendar
from services.allocation.storage import load_calendar
from services.common.errors import BadInput, Conflict, Forbidden, Unauthorized

ALMATY = ZoneInfo("Asia/Almaty")
UTC = dt.timezone.utc


def almaty(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ALMATY)


# -- working-day calendar -------------------------------------------------------------------------

def test_five_working_days_from_a_friday_end_next_friday_same_time():
    calendar = WorkingCalendar()
    issued = almaty(2027, 6, 4, 15, 30)  # Friday
    expires = calendar.add_working_days(issued, 5, ALMATY)
    assert expires.astimezone(ALMATY) == almaty(2027, 6, 11, 15, 30)
    assert expires.tzinfo == UTC


def test_weekends_are_skipped():
    calendar = WorkingCalendar()
    issued = almaty(2027, 6, 9, 10, 0)  # Wednesday
    # Thu, Fri, (Sat, Sun skipped), Mon, Tue, Wed
    assert calendar.add_working_days(issued, 5, ALMATY).astimezone(ALMATY) == \
        almaty(2027, 6, 16, 10, 0)


def test_a_listed_holiday_is_skipped():
    calendar = WorkingCalendar.from_rows([{"date": "2027-06-14", "kind": "holiday"}])
    issued = almaty(2027, 6, 9, 10, 0)  # Wednesday; Monday 14 June is a holiday
    assert calendar.add_working_days(issued, 5, ALMATY).astimezone(ALMATY) == \
        almaty(2027, 6, 17, 10, 0)


def test_a_listed_working_weekend_day_counts():
    calendar = WorkingCalendar.from_rows([{"date": "2027-06-12", "kind": "working_day"}])
    issued = almaty(2027, 6, 11, 9, 0)  # Friday; Saturday 12 June made a working day
    assert calendar.add_working_days(issued, 1, ALMATY).astimezone(ALMATY) == \
        almaty(2027, 6, 12, 9, 0)


def test_unknown_calendar_kind_is_refused():
    with pytest.raises(ValueError):
        WorkingCalendar.from_rows([{"date": "2027-06-12", "kind": "party"}])


def test_naive_moment_is_refused():
    with pytest.raises(ValueError):
        WorkingCalendar().add_working_days(dt.datetime(2027, 1, 1), 5, ALMATY)


def test_kazakhstan_calendar_file_skips_nauryz_and_its_observed_days():
    calendar = load_calendar()
    # 2026: Nauryz 21-23 March (Sat-Mon), observed on Tue 24 and Wed 25
    issued = almaty(2026, 3, 19, 11, 0)  # Thursday
    # Fri 20, then Thu 26, Fri 27, Mon 30, Tue 31
    assert calendar.add_working_days(issued, 5, ALMATY).astimezone(ALMATY) == \
        almaty(2026, 3, 31, 11, 0)


@pytest.mark.parametrize("day", [
    "2024-01-01", "2025-01-02", "2026-01-07", "2027-03-08", "2028-03-22", "2025-05-01",
    "2026-05-07", "2027-05-10", "2026-07-06", "2025-08-30", "2027-10-25", "2028-12-16",
    "2024-06-16", "2025-06-06",
])
def test_kazakhstan_calendar_file_lists_public_holidays(day):
    assert not load_calendar().is_working_day(dt.date.fromisoformat(day))


def test_kazakhstan_calendar_file_keeps_ordinary_days_working():
    calendar = load_calendar()
    assert calendar.is_working_day(dt.date(2026, 3, 26))
    assert calendar.is_working_day(dt.date(2024, 5, 4))  # a working Saturday by decree
    assert not calendar.is_working_day(dt.date(2026, 3, 28))  # an ordinary Saturday


def test_direction_expiry_uses_configured_days_and_calendar():
    rules = Rules(direction_valid_working_days=2,
                  calendar=WorkingCalendar.from_rows([{"date": "2027-06-10", "kind": "holiday"}]))
    issued = almaty(2027, 6, 9, 8, 0).astimezone(UTC)
    assert rules.direction_expiry(issued).astimezone(ALMATY) == almaty(2027, 6, 14, 8, 0)


# -- priority period and claim pool ----------------------------------------------------------------

def test_priority_period_lasts_the_configured_hours():
    rules = Rules.from_settings({"PRIORITY_PERIOD_HOURS": 24}, WorkingCalendar())
    now = dt.datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
    assert rules.priority_period_from(now) == (now, now + dt.timedelta(hours=24))


def test_claims_inside_the_window_are_pooled_and_later_ones_are_not():
    rules = Rules.from_settings({"CLAIM_POOL_MINUTES": 10}, WorkingCalendar())
    opened = dt.datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
    assert rules.in_claim_pool(opened, opened)
    assert rules.in_claim_pool(opened, opened + dt.timedelta(minutes=9, seconds=59))
    assert not rules.in_claim_pool(opened, opened + dt.timedelta(minutes=10))
    assert not rules.in_claim_pool(opened, opened + dt.timedelta(hours=2))
    assert rules.pool_closes_at(opened) == opened + dt.timedelta(minutes=10)


def test_fractional_settings_are_accepted():
    rules = Rules.from_settings({"CLAIM_POOL_MINUTES": "0.5", "PRIORITY_PERIOD_HOURS": "0.25",
                                 "DIRECTION_VALID_WORKING_DAYS": "3"}, WorkingCalendar())
    assert rules.claim_pool == dt.timedelta(seconds=30)
    assert rules.priority_period == dt.timedelta(minutes=15)
    assert rules.direction_valid_working_days == 3


# -- capacity, input, roles ------------------------------------------------------------------------

def test_free_capacity_counts_enrolled_and_already_released_places():
    assert domain.free_capacity(25, 20, 3) == 2
    assert domain.free_capacity(25, 25, 0) == 0
    assert domain.free_capacity(25, 24, 3) == 0


@pytest.mark.parametrize("places", [0, 51, -1, "x", None, 2.5, True])
def test_places_outside_1_to_50_are_bad_input(places):
    with pytest.raises(BadInput) as err:
        domain.parse_places(places)
    assert err.value.field == "places"


def test_places_accepts_a_number():
    assert domain.parse_places(50) == 50
    assert domain.parse_places("3") == 3


def test_staff_release_only_their_own_organisation():
    domain.require_releaser({"id": "s", "role": "staff", "organization_id": 7}, 7)
    domain.require_releaser({"id": "s", "role": "staff", "organization_id": "7"}, 7)
    domain.require_releaser({"id": "o", "role": "officer", "organization_id": None}, 7)
    with pytest.raises(Forbidden):
        domain.require_releaser({"id": "s", "role": "staff", "organization_id": 8}, 7)
    with pytest.raises(Forbidden):
        domain.require_releaser({"id": "applicant:+7701", "role": "applicant"}, 7)
    with pytest.raises(Unauthorized):
        domain.require_releaser(None, 7)


def test_only_the_holder_may_decline():
    domain.require_direction_holder({"id": "applicant:+1", "role": "applicant"}, "applicant:+1")
    with pytest.raises(Forbidden):
        domain.require_direction_holder({"id": "applicant:+2", "role": "applicant"},
                                        "applicant:+1")
    with pytest.raises(Forbidden):
        domain.require_direction_holder({"id": "applicant:+1", "role": "staff"}, "applicant:+1")


def test_direction_type_and_number():
    assert domain.direction_type({"queue_type": "general"}, by_claim=False) == "priority"
    assert domain.direction_type({"queue_type": "general"}, by_claim=True) == "vacancy"
    assert domain.direction_type({"queue_type": "transfer"}, by_claim=True) == "transfer"
    assert domain.direction_number(42) == "D000000042"


def test_only_an_issued_direction_can_change():
    domain.require_open({"status": "issued"}, "decline")
    with pytest.raises(Conflict):
        domain.require_open({"status": "enrolled"}, "decline")


def test_fit_verdict_reads_the_queue_answer():
    assert domain.fit_verdict({"fits": True, "applicant_id": "applicant:+1"}) == \
        (True, None, "applicant:+1")
    fits, reason, owner = domain.fit_verdict({"fits": False, "reason": "language differs",
                                              "applicant_id": "applicant:+1"})
    assert (fits, reason, owner) == (False, "language differs", "applicant:+1")
    assert domain.fit_verdict(None)[0] is False


def test_place_id_must_be_a_uuid():
    with pytest.raises(BadInput) as err:
        domain.parse_place_id("12; drop table")
    assert err.value.field == "place_id"
