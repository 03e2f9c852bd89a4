"""Rules of services.applications.domain and feed_texts: no database, no broker."""

import datetime as dt

import pytest

from services.applications import domain, feed_texts
from services.applications.domain import check_iin, make_iin, validate_new_application
from services.common.errors import BadInput, Conflict, Forbidden, RuleRefused, Unauthorized

TODAY = dt.date(2026, 11, 25)
CATEGORIES = {"large_families": "first_priority", "conscript_servicemen": "out_of_turn"}


# -- IIN ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("iin, birth_date, sex", [
    # 9*1 + 1*4 + 1*6 + 3*7 + 1*9 + 2*10 + 3*11 = 102; 102 mod 11 = 3
    ("900101301233", dt.date(1990, 1, 1), "M"),
    ("220315600126", dt.date(2022, 3, 15), "F"),
    ("211231500015", dt.date(2021, 12, 31), "M"),
    ("990505200073", dt.date(1899, 5, 5), "F"),
    # weights 1..11 give 98 mod 11 = 10; weights 3..11,1,2 give 125 mod 11 = 4
    ("220315500104", dt.date(2022, 3, 15), "M"),
    ("000229500018", dt.date(2000, 2, 29), "M"),  # a leap day is a real date
])
def test_valid_iins(iin, birth_date, sex):
    info = check_iin(iin, "child.iin")
    assert info.birth_date == birth_date
    assert info.sex == sex


@pytest.mark.parametrize("iin", [
    "900101301234",  # check digit should be 3
    "220315600127",  # check digit should be 6
    "220315500101",  # first weights give 10: the second weights' 4 is the digit, not 1
])
def test_bad_check_digit_is_refused(iin):
    with pytest.raises(RuleRefused) as err:
        check_iin(iin, "child.iin")
    assert err.value.code == "IIN_INVALID"
    assert err.value.field == "child.iin"
    assert "check digit" in err.value.message


@pytest.mark.parametrize("last", "0123456789")
def test_iin_whose_second_weights_also_give_10_is_refused_whatever_the_last_digit(last):
    # 2,2,0,3,1,5,5,0,0,1,3: weights 1..11 -> 131 mod 11 = 10, weights 3..11,1,2 -> 153 mod 11 = 10
    with pytest.raises(RuleRefused) as err:
        check_iin("22031550013" + last, "applicant.iin")
    assert err.value.code == "IIN_INVALID"


@pytest.mark.parametrize("century_digit", "0789")
def test_bad_century_digit_is_refused(century_digit):
    iin = "900101" + century_digit + "0123" + "0"
    with pytest.raises(RuleRefused) as err:
        check_iin(iin, "applicant.iin")
    assert err.value.code == "IIN_INVALID"
    assert err.value.field == "applicant.iin"
    assert "digit 7" in err.value.message


@pytest.mark.parametrize("first_eleven", [
    "90130130123",  # month 13
    "90023030123",  # 30 February
    "01022950001",  # 29 February 2001 is not a leap day
    "22000050001",  # month 00
])
def test_impossible_birth_date_is_refused(first_eleven):
    check = domain.iin_check_digit(first_eleven)
    iin = first_eleven + str(check if check is not None else 0)
    with pytest.raises(RuleRefused) as err:
        check_iin(iin, "child.iin")
    assert err.value.code == "IIN_INVALID"
    assert "date" in err.value.message


@pytest.mark.parametrize("value", ["12345", "9001013012330", "90010130123a", 900101301233,
                                   None, "９００１０１３０１２３３"])
def test_iin_that_is_not_12_digits_is_bad_input(value):
    with pytest.raises(BadInput) as err:
        check_iin(value, "applicant.iin")
    assert err.value.field == "applicant.iin"


def test_make_iin_round_trips_and_refuses_a_serial_without_check_digit():
    for serial in (0, 1, 12, 9999):
        for sex in ("M", "F"):
            for born in (dt.date(2020, 2, 29), dt.date(1985, 7, 1), dt.date(1850, 1, 31)):
                try:
                    iin = make_iin(born, sex, serial)
                except ValueError:
                    continue
                info = check_iin(iin, "x")
                assert (info.birth_date, info.sex) == (born, sex)
                assert iin[7:11] == f"{serial:04d}"
    with pytest.raises(ValueError):
        make_iin(dt.date(2022, 3, 15), "M", 13)
    assert make_iin(dt.date(2022, 3, 15), "M", 10) == "220315500104"


# -- a new application ----------------------------------------------------------------------------

def child_iin(born=dt.date(2023, 4, 10), serial=21):
    return make_iin(born, "F", serial)


def application(**overrides):
    data = {
        "applicant": {"iin": "900101301233", "full_name": "  Әлия   Серікқызы ",
                      "phone": "+7 701 123-45-67"},
        "child": {"iin": child_iin(), "full_name": "Айгерім", "birth_date": "2023-04-10"},
        "queue_type": "general",
        "language": "kk",
        "district": "Алмалы",
        "preferred_organizations": [12, 15],
        "desired_start": "2027-09-01",
        "benefit": None,
    }
    data.update(overrides)
    return data


def validate(data, **kw):
    return validate_new_application(data, today=kw.pop("today", TODAY),
                                    categories=CATEGORIES, **kw)


def refused(data, exc=BadInput, **kw):
    with pytest.raises(exc) as err:
        validate(data, **kw)
    return err.value


def test_a_valid_application_is_normalised():
    cmd = validate(application(benefit={"category": "large_families", "document": "№ 17"}))
    assert cmd.applicant_name == "Әлия Серікқызы"
    assert cmd.applicant_phone == "+77011234567"
    assert cmd.child_birth_date == dt.date(2023, 4, 10)
    assert cmd.preferred_organizations == (12, 15)
    assert cmd.desired_start == dt.date(2027, 9, 1)
    assert (cmd.benefit_category, cmd.benefit_document) == ("large_families", "№ 17")
    assert cmd.queue_name == "Алмалы/general/2023"
    assert cmd.current_organization_id is None


def test_client_sent_filed_at_is_refused_naming_it():
    err = refused(application(filed_at="2020-01-01T00:00:00+00:00"))
    assert err.field == "filed_at"
    assert err.code == "UNKNOWN_FIELD"


def test_unknown_nested_field_is_refused_with_its_path():
    data = application()
    data["child"]["sex"] = "F"
    assert refused(data).field == "child.sex"


@pytest.mark.parametrize("missing", ["applicant", "child", "queue_type", "language",
                                     "district", "preferred_organizations", "desired_start"])
def test_missing_field_is_named(missing):
    data = application()
    del data[missing]
    assert refused(data).field == missing


@pytest.mark.parametrize("phone", ["87011234567", "+7701123456", "+770112345678", "+1 701 123 4567",
                                   7011234567])
def test_bad_phone(phone):
    data = application()
    data["applicant"]["phone"] = phone
    assert refused(data).field == "applicant.phone"


def test_bad_child_iin_check_digit_is_422_with_the_field():
    data = application()
    iin = data["child"]["iin"]
    data["child"]["iin"] = iin[:11] + str((int(iin[11]) + 1) % 10)
    err = refused(data, RuleRefused)
    assert (err.field, err.code, err.status) == ("child.iin", "IIN_INVALID", 422)


def test_bad_applicant_iin_is_refused():
    data = application()
    data["applicant"]["iin"] = "900101901233"
    err = refused(data, RuleRefused)
    assert (err.field, err.code) == ("applicant.iin", "IIN_INVALID")


def test_birth_date_must_match_the_iin():
    data = application()
    data["child"]["birth_date"] = "2023-04-11"
    err = refused(data, RuleRefused)
    assert (err.field, err.code) == ("child.birth_date", "BIRTH_DATE_MISMATCH")


def test_birth_date_in_the_future_is_refused():
    born = TODAY + dt.timedelta(days=1)
    data = application(child={"iin": child_iin(born), "full_name": "X",
                              "birth_date": born.isoformat()})
    err = refused(data, RuleRefused)
    assert (err.field, err.code) == ("child.birth_date", "BIRTH_DATE_IN_FUTURE")


def test_child_must_be_under_seven():
    seventh_birthday = dt.date(TODAY.year - 7, TODAY.month, TODAY.day)
    day_before = seventh_birthday + dt.timedelta(days=1)
    ok = application(child={"iin": child_iin(day_before), "full_name": "X",
                            "birth_date": day_before.isoformat()})
    assert validate(ok).child_birth_date == day_before
    too_old = application(child={"iin": child_iin(seventh_birthday), "full_name": "X",
                                 "birth_date": seventh_birthday.isoformat()})
    err = refused(too_old, RuleRefused)
    assert (err.field, err.code) == ("child.birth_date", "CHILD_TOO_OLD")


def test_age_counts_a_leap_day_birthday_on_first_of_march():
    born = dt.date(2020, 2, 29)
    assert domain.age_in_years(born, dt.date(2027, 2, 28)) == 6
    assert domain.age_in_years(born, dt.date(2027, 3, 1)) == 7


@pytest.mark.parametrize("field, value", [
    ("queue_type", "nursery"), ("language", "en"), ("district", "   "), ("district", None),
])
def test_bad_choices(field, value):
    assert refused(application(**{field: value})).field == field


@pytest.mark.parametrize("prefs, field", [
    ([], "preferred_organizations"),
    ([1, 2, 3, 4], "preferred_organizations"),
    ([5, 5], "preferred_organizations"),
    ("12", "preferred_organizations"),
    ([1, "2"], "preferred_organizations[1]"),
    ([True], "preferred_organizations[0]"),
    ([0], "preferred_organizations[0]"),
])
def test_bad_preferences(prefs, field):
    assert refused(application(preferred_organizations=prefs)).field == field


def test_preference_limit_is_a_setting():
    assert refused(application(preferred_organizations=[1, 2]),
                   max_preferred=1).code == "TOO_MANY"


def test_desired_start_not_in_the_past():
    assert validate(application(desired_start=TODAY.isoformat())).desired_start == TODAY
    err = refused(application(desired_start="2026-11-24"), RuleRefused)
    assert err.field == "desired_start"
    assert refused(application(desired_start="01.09.2027")).field == "desired_start"


@pytest.mark.parametrize("benefit, field", [
    ({"category": "vip", "document": "x"}, "benefit.category"),
    ({"document": "x"}, "benefit.category"),
    ({"category": "large_families", "document": " "}, "benefit.document"),
    ({"category": "large_families"}, "benefit.document"),
    ({"category": "large_families", "document": "x", "tier": "out_of_turn"}, "benefit.tier"),
    ("large_families", "benefit"),
])
def test_bad_benefit(benefit, field):
    assert refused(application(benefit=benefit)).field == field


def test_transfer_needs_current_organisation_and_group():
    assert refused(application(queue_type="transfer")).field == "current_organization_id"
    assert refused(application(queue_type="transfer", current_organization_id=3)).field \
        == "current_group_id"
    cmd = validate(application(queue_type="transfer", current_organization_id=3,
                               current_group_id=9))
    assert (cmd.current_organization_id, cmd.current_group_id) == (3, 9)
    assert refused(application(current_organization_id=3)).field == "current_organization_id"


# -- who may do what ------------------------------------------------------------------------------

def test_actor_rules():
    parent = {"id": "applicant:+77011234567", "role": "applicant"}
    with pytest.raises(Unauthorized):
        domain.check_actor({"role": "applicant"})
    assert domain.applicant_id_for(parent, "+77020000000") == parent["id"]
    assert domain.applicant_id_for({"id": "system", "role": "system"}, "+77020000000") \
        == "applicant:+77020000000"
    with pytest.raises(Forbidden):
        domain.applicant_id_for({"id": "s", "role": "staff"}, "+77020000000")
    domain.check_can_read(parent, parent["id"])
    domain.check_can_read({"id": "o", "role": "officer"}, parent["id"])
    with pytest.raises(Forbidden):
        domain.check_can_read({"id": "applicant:+77019999999", "role": "applicant"}, parent["id"])
    with pytest.raises(Forbidden):
        domain.check_can_read({"id": "a", "role": "auditor"}, parent["id"])
    with pytest.raises(Conflict) as err:
        domain.check_can_withdraw(parent, parent["id"], "withdrawn")
    assert err.value.code == "ALREADY_WITHDRAWN"
    with pytest.raises(Forbidden):
        domain.check_can_verify(parent, "queued", "claimed")
    with pytest.raises(Conflict) as err:
        domain.check_can_verify({"id": "o", "role": "officer"}, "queued", "approved")
    assert err.value.code == "ALREADY_VERIFIED"


def test_status_changes_and_their_feed_entries():
    assert domain.next_status("queued", "offered") == "offered"
    assert domain.next_status("withdrawn", "queued") is None  # withdrawal is final
    assert domain.next_status("provided", "stop_listed") is None
    assert domain.next_status("queued", "queued") is None
    assert domain.feed_kind_for_status("offered", "stop_listed") == "stop_listed"
    assert domain.feed_kind_for_status("stop_listed", "queued") == "back_in_queue"
    assert domain.feed_kind_for_status("offered", "queued") is None
    assert domain.feed_kind_for_status("queued", "offered") is None


# -- feed texts -----------------------------------------------------------------------------------

def test_feed_texts_in_both_languages():
    text = feed_texts.render("offered", number="A000000007", direction="D-12",
                             expires_at="2026-12-01T12:00:00+00:00", organization_name="Балапан")
    # 12:00 UTC is 17:00 in Almaty (UTC+5)
    assert "01.12.2026 17:00" in text["kk"] and "01.12.2026 17:00" in text["ru"]
    assert "D-12" in text["kk"] and "Балапан" in text["ru"]
    stop = feed_texts.render("stop_listed", number="A000000007", reason="direction_expired",
                             exits_at=None)
    assert "мерзімінде пайдаланылмады" in stop["kk"]
    assert "не использовано в срок" in stop["ru"]
    postponed = feed_texts.render("stop_listed", number="A1", reason="postponed",
                                  exits_at="2027-08-01")
    assert "01.08.2027" in postponed["ru"]
    for kind in feed_texts.TEMPLATES:
        text = feed_texts.render(kind, number="A000000001", queue_name="q", direction="D",
                                 expires_at=None, category_kk="k", category_ru="r",
                                 reason="documents_check")
        assert set(text) == {"kk", "ru"} and "A000000001" in text["kk"] + text["ru"]
