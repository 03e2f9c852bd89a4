"""Registry rules without I/O: masking, queue order, filters, row shapes, suppression."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.common.contracts import PoisonMessage
from services.common.errors import BadInput, Forbidden
from services.registry import domain

ALMATY = ZoneInfo("Asia/Almaty")
UTC = dt.timezone.utc


def t(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("full, masked", [
    ("Ахметов Арман Болатович", "Ахметов А.Б."),
    ("  Ахметов   Арман  ", "Ахметов А."),
    ("Ахметов", "Ахметов"),
    ("Сейтқали Айгерім Болат қызы", "Сейтқали А.Б."),
    ("иванова анна-мария петровна", "иванова А.П."),
])
def test_public_names_are_surname_and_initials(full, masked):
    assert domain.mask_name(full) == masked


def test_full_names_when_the_setting_asks_for_them():
    assert domain.mask_name("Ахметов  Арман Болатович", full=True) == "Ахметов Арман Болатович"


def test_settings_read_full_names_from_yaml_strings():
    assert domain.RegistrySettings.from_settings({"PUBLIC_FULL_NAMES": "true"}).public_full_names
    assert not domain.RegistrySettings.from_settings(
        {"PUBLIC_FULL_NAMES": "false"}).public_full_names
    assert domain.RegistrySettings.from_settings({"MAX_PREFERRED_ORGANIZATIONS": 2}
                                                 ).max_preferred == 2


# -- queue order ---------------------------------------------------------------------------------


def entry(number, filed_at, tier=None, status="queued", queue="Q1"):
    return {"application_number": number, "filed_at": filed_at, "benefit_tier": tier,
            "status": status, "queue_name": queue}


def test_position_orders_by_tier_then_filing_moment_then_number():
    entries = [
        entry("A-5", t(8)),
        entry("A-4", t(9), tier="first_priority"),
        entry("A-3", t(10), tier="out_of_turn"),
        entry("A-2", t(7)),
        entry("A-1", t(7)),  # same moment as A-2: the application number decides
    ]
    assert domain.positions(entries) == {"A-3": 1, "A-4": 2, "A-1": 3, "A-2": 4, "A-5": 5}


def test_stop_listed_and_offered_keep_their_place_others_have_no_number():
    entries = [
        entry("A-1", t(7), status="stop_listed"),
        entry("A-2", t(8), status="provided"),
        entry("A-3", t(9), status="offered"),
        entry("A-4", t(10), status="withdrawn"),
        entry("A-5", t(11)),
        entry("B-1", t(12), queue="Q2"),
    ]
    assert domain.positions(entries) == {"A-1": 1, "A-3": 2, "A-5": 3, "B-1": 1}


def test_no_benefit_is_spelled_none_whatever_the_snapshot_says():
    base = {"application_number": "A-1", "revision": 1, "queue_name": "Q", "district": "D",
            "queue_type": "general", "birth_year": "2022", "language": "kk", "status": "queued",
            "filed_at": "2026-03-02T04:00:00+00:00", "stop_list": None, "applicant_name": "А",
            "child_name": "Б", "preferred_organizations": ["3"]}
    for tier in (None, "none", "unverified"):
        assert domain.clean_entry({**base, "benefit_tier": tier})["benefit_tier"] == "none"
    cleaned = domain.clean_entry({**base, "benefit_tier": "out_of_turn"})
    assert (cleaned["benefit_tier"], cleaned["birth_year"], cleaned["preferred_organizations"]) == (
        "out_of_turn", 2022, [3])


def test_a_snapshot_without_a_usable_revision_is_poison():
    with pytest.raises(PoisonMessage):
        domain.clean_place({"place_id": "p", "revision": "two", "status": "priority",
                            "organization_id": 1})


def test_queue_type_fit():
    assert domain.queue_type_fits("transfer", "general")
    assert domain.queue_type_fits("general", "general")
    assert domain.queue_type_fits("special", "special")
    assert not domain.queue_type_fits("general", "special")
    assert not domain.queue_type_fits("sanatorium", "short_stay")


# -- filters and paging --------------------------------------------------------------------------


def test_filters_convert_query_strings():
    f = domain.parse_filters("queue", {"birth_year": "2022", "language": "kk", "district": " X ",
                                       "organization_id": "7", "format": "csv", "status": ""},
                             ALMATY)
    assert f == {"birth_year": 2022, "language": "kk", "district": "X", "organization_id": 7}


def test_age_group_is_the_birth_year():
    assert domain.parse_filters("organizations", {"age_group": "2021"}, ALMATY) == {
        "birth_year": 2021}


@pytest.mark.parametrize("registry, filters, field", [
    ("queue", {"colour": "red"}, "colour"),
    ("queue", {"birth_year": "twenty"}, "birth_year"),
    ("queue", {"birth_year": 1800}, "birth_year"),
    ("queue", {"language": "en"}, "language"),
    ("queue", {"status": "withdrawn"}, "status"),
    ("directions", {"status": "lost"}, "status"),
    ("vacancies", {"in_priority_period": "maybe"}, "in_priority_period"),
    ("organizations", {"ownership": "public"}, "ownership"),
    ("organizations", {"from": "2026-01-01"}, "from"),
    ("releases", {"from": "yesterday"}, "from"),
    ("releases", {"from": "2026-02-01", "to": "2026-01-01"}, "to"),
    ("queue", ["district"], "filters"),
])
def test_bad_filters_name_the_field(registry, filters, field):
    with pytest.raises(BadInput) as err:
        domain.parse_filters(registry, filters, ALMATY)
    assert err.value.field == field


def test_date_filters_cover_whole_local_days():
    f = domain.parse_filters("releases", {"from": "2026-03-02", "to": "2026-03-02"}, ALMATY)
    assert f["from"] == dt.datetime(2026, 3, 2, tzinfo=ALMATY)
    assert f["to"] == dt.datetime(2026, 3, 3, tzinfo=ALMATY)
    assert f["from"] < dt.datetime(2026, 3, 2, 23, 59, tzinfo=ALMATY) < f["to"]


@pytest.mark.parametrize("page, page_size, field", [
    (0, 10, "page"), ("x", 10, "page"), (1, 0, "page_size"), (1, 501, "page_size"),
    (True, 10, "page"),
])
def test_bad_paging_names_the_field(page, page_size, field):
    with pytest.raises(BadInput) as err:
        domain.parse_page(page, page_size)
    assert err.value.field == field


def test_paging_defaults_and_strings():
    assert domain.parse_page(None, None) == (1, 50)
    assert domain.parse_page("3", "500") == (3, 500)


# -- master data ---------------------------------------------------------------------------------

ORG = {"name": "Балапан", "address": "Абай 1", "district": "Алмалы", "ownership": "state",
       "kind": "kindergarten", "languages": ["ru", "kk"], "monthly_fee_kzt": 0}


def test_organization_is_cleaned():
    org = domain.validate_organization({**ORG, "name": "  Балапан   №1 "})
    assert org["name"] == "Балапан №1"
    assert org["languages"] == ["kk", "ru"]


@pytest.mark.parametrize("change, field", [
    ({"name": ""}, "name"), ({"ownership": "public"}, "ownership"), ({"kind": "school"}, "kind"),
    ({"languages": []}, "languages"), ({"languages": ["en"]}, "languages"),
    ({"monthly_fee_kzt": -1}, "monthly_fee_kzt"), ({"colour": "red"}, "colour"),
])
def test_bad_organization_names_the_field(change, field):
    with pytest.raises(BadInput) as err:
        domain.validate_organization({**ORG, **change})
    assert err.value.field == field


def test_missing_field_is_named_and_partial_updates_need_a_change():
    data = dict(ORG)
    del data["district"]
    with pytest.raises(BadInput) as err:
        domain.validate_organization(data)
    assert err.value.field == "district"
    assert domain.validate_organization({"name": "Жаңа"}, partial=True) == {"name": "Жаңа"}
    with pytest.raises(BadInput):
        domain.validate_organization({}, partial=True)


GROUP = {"name": "Күншуақ", "group_type": "general", "birth_year": 2022, "language": "kk",
         "capacity": 20, "enrolled": 3}


@pytest.mark.parametrize("change, field", [
    ({"group_type": "nursery"}, "group_type"), ({"birth_year": "x"}, "birth_year"),
    ({"capacity": 0}, "capacity"), ({"enrolled": 21}, "enrolled"), ({"language": "ru"}, "language"),
    ({"name": None}, "name"),
])
def test_bad_group_names_the_field(change, field):
    with pytest.raises(BadInput) as err:
        domain.validate_group({**GROUP, **change}, ["kk"])
    assert err.value.field == field


def test_only_officers_keep_master_data():
    domain.require_master_data_role({"role": "officer"})
    domain.require_master_data_role({"role": "staff", "organization_id": 5}, 5, staff_allowed=True)
    for actor, org in [({"role": "applicant"}, None), ({"role": "staff", "organization_id": 4}, 5),
                       (None, None), ({"role": "auditor"}, None)]:
        with pytest.raises(Forbidden):
            domain.require_master_data_role(actor, org, staff_allowed=True)


def test_preferences_are_limited_and_distinct():
    assert domain.validate_preferences(["1", 2], "2022", "kk", "transfer", 3) == (
        [1, 2], 2022, "kk", "transfer")
    for ids in ([1, 2, 3, 4], [1, 1], ["x"], "1,2"):
        with pytest.raises(BadInput) as err:
            domain.validate_preferences(ids, 2022, "kk", "general", 3)
        assert err.value.field == "preferred_organizations"
    with pytest.raises(BadInput) as err:
        domain.validate_preferences([1], 2022, "kk", "nursery", 3)
    assert err.value.field == "queue_type"


# -- public rows ---------------------------------------------------------------------------------

SETTINGS = domain.RegistrySettings()


def test_queue_row_carries_the_05_18_fields_and_masks_names():
    row = {"queue_name": "Алмалы/general/2022", "queue_number": 4,
           "applicant_name": "Ахметов Арман Болатович", "child_name": "Ахметова Дана Армановна",
           "application_number": "A-000123", "filed_at": dt.datetime(2026, 3, 1, 20, 30,
                                                                    tzinfo=UTC),
           "status": "queued", "queue_type": "general", "benefit_tier": "first_priority",
           "stop_list": None, "iin": "must not leak", "phone": "must not leak"}
    out = domain.queue_row(row, SETTINGS)
    assert out["applicant_name"] == "Ахметов А.Б."
    assert out["child_name"] == "Ахметова Д.А."
    # 20:30 UTC is 01:30 the next day in Almaty (UTC+5)
    assert (out["filed_date"], out["filed_time"]) == ("2026-03-02", "01:30:00")
    assert out["first_priority_benefit"] and not out["out_of_turn_benefit"]
    assert out["provided"] is False
    assert out["filed_at"] == "2026-03-01T20:30:00+00:00"
    assert "iin" not in out and "phone" not in out
    assert set(domain.QUEUE_COLUMNS) <= set(out)


def test_lookup_row_carries_the_stop_list_of_05_22():
    row = {"queue_name": "Q", "queue_number": 2, "applicant_name": "А Б", "child_name": "В Г",
           "application_number": "A-1", "filed_at": t(3), "status": "stop_listed",
           "queue_type": "general", "benefit_tier": None,
           "stop_list": {"entered_at": "2026-03-05T10:00:00+00:00", "exits_at": "2026-08-01",
                         "reason": "postponed"}}
    out = domain.lookup_row(row, SETTINGS)
    assert out["stop_list"]["reason"] == "postponed"
    assert (out["stop_list_entered_on"], out["stop_list_exits_on"], out["stop_list_reason"]) == (
        "2026-03-05", "2026-08-01", "postponed")
    assert set(domain.LOOKUP_COLUMNS) <= set(out)


def test_direction_row_never_shows_the_application_number():
    row = {"number": "D-1", "status": "issued", "type": "priority", "place_id": 9,
           "organization_id": 1, "organization_name": "Балапан",
           "child_name": "Ахметова Дана Армановна", "birth_year": 2022, "language": "kk",
           "issued_at": t(4), "expires_at": t(5), "application_number": "A-1"}
    out = domain.direction_row(row, SETTINGS)
    assert "application_number" not in out
    assert out["child_name"] == "Ахметова Д.А."
    assert (out["issued_date"], out["issued_time"]) == ("2026-03-02", "09:00:00")
    assert set(domain.DIRECTION_COLUMNS) <= set(out)


def test_organization_view_summarises_groups_for_05_17():
    groups = [dict(GROUP, id=2, enrolled=5), dict(GROUP, id=1, group_type="special",
                                                  language="ru", capacity=10, enrolled=1)]
    out = domain.organization_view({**ORG, "id": 1, "revision": 3}, groups, vacancies=0)
    assert out["groups_count"] == 2 and [g["id"] for g in out["groups"]] == [1, 2]
    assert out["group_types"] == {"general": 1, "special": 1}
    assert out["group_languages"] == ["kk", "ru"]
    assert (out["capacity"], out["enrolled"]) == (30, 6)
    assert out["has_vacancies"] is False


# -- read-model transitions ----------------------------------------------------------------------


def test_entry_facts():
    new = {"status": "queued", "benefit_tier": "none"}
    assert domain.entry_facts(None, new) == ["filed"]
    assert domain.entry_facts(new, {"status": "withdrawn", "benefit_tier": "none"}) == [
        "withdrawn"]
    assert domain.entry_facts(new, {"status": "queued", "benefit_tier": "out_of_turn"}) == [
        "benefit_granted"]
    assert domain.entry_facts(new, new) == []


def test_enrolment_counts_once():
    assert domain.enrolled_delta(None, "enrolled") == 1
    assert domain.enrolled_delta("issued", "enrolled") == 1
    assert domain.enrolled_delta("enrolled", "enrolled") == 0
    assert domain.enrolled_delta("issued", "declined") == 0
    assert domain.direction_facts({"status": "issued"}, {"status": "expired"}) == [
        "direction_expired"]
    assert domain.direction_facts(None, {"status": "issued"}) == ["direction_issued"]


# -- suppression ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, shown", [(0, 0), (1, None), (4, None), (5, 5), (120, 120)])
def test_figures_about_fewer_than_five_children_are_suppressed(n, shown):
    cell = domain.suppressed(n)
    assert cell["count"] == shown
    assert cell["suppressed"] is (shown is None)


def test_statistics_suppress_each_cell_about_children():
    day = dt.date(2026, 3, 2)
    stats = domain.build_statistics(
        {},
        sizes=[{"queue_name": "Q1", "district": "D", "queue_type": "general", "birth_year": 2022,
                "n": 7, "with_benefit": 2}],
        flows=[{"kind": "filed", "day": day, "n": 6}, {"kind": "withdrawn", "day": day, "n": 1}],
        allocations=[{"kind": "direction_issued", "day": day, "direction_type": "priority",
                      "n": 3}],
        org_activity=[{"kind": "place_released", "organization_id": 1, "n": 2},
                      {"kind": "direction_enrolled", "organization_id": 1, "n": 2}],
        departments=[], users=[], events=[], names={1: "Балапан"}, at=None)
    assert stats["queues"][0]["children"] == {"count": 7, "suppressed": False}
    assert stats["queues"][0]["with_benefit"] == {"count": None, "suppressed": True}
    flow = stats["flows"][0]
    assert flow["day"] == "2026-03-02"
    assert flow["filed"]["count"] == 6
    assert flow["withdrawn"] == {"count": None, "suppressed": True}
    assert flow["provided"] == {"count": 0, "suppressed": False}
    assert stats["allocations"][0]["issued"]["suppressed"] is True
    org = stats["organizations"][0]
    assert org["organization_name"] == "Балапан"
    assert org["releases"] == {"count": 2, "suppressed": False}  # places, not children
    assert org["enrolments"] == {"count": None, "suppressed": True}
