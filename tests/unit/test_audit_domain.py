"""Audit rules without I/O: which messages are records, which queries are allowed, what a
checkpoint says about the chain."""

import datetime as dt
import json
import uuid

import pytest

from services.audit import domain
from services.common import contracts
from services.common.errors import BadInput


def test_a_published_record_is_stored_with_every_contract_field():
    published = contracts.audit_record(
        request_id="r-1", actor="applicant:+77010000001", role="applicant",
        action="POST /api/v1/applications", target="application:A-1", outcome="ok",
        ip="10.0.0.1", forwarded_for="1.2.3.4", user_agent="Mozilla/5.0",
        accept_language="kk", fingerprint="fp-1", server_fingerprint="sfp-1",
        body_digest="ab" * 32, service="gateway")
    record = domain.normalize_record(json.loads(json.dumps(published)))
    assert set(record) == set(contracts.AUDIT_FIELDS)
    assert record["id"] == published["id"]
    assert record["actor"] == "applicant:+77010000001"
    assert record["target"] == "application:A-1"


def test_system_audit_records_are_valid():
    record = domain.normalize_record(contracts.audit_record(
        **contracts.system_audit("allocation", "direction_expired", "direction:D-1")))
    assert record["actor"] == "system" and record["ip"] is None


def test_numbers_and_lists_become_text():
    record = domain.normalize_record(contracts.audit_record(
        action="GET /", outcome=429, forwarded_for=["1.2.3.4", "10.0.0.1"]))
    assert record["outcome"] == "429"
    assert record["forwarded_for"] == "1.2.3.4, 10.0.0.1"


def test_an_oversized_value_is_cut_not_refused():
    record = domain.normalize_record(contracts.audit_record(action="GET /",
                                                            user_agent="x" * 10_000))
    assert len(record["user_agent"]) == domain.MAX_VALUE_CHARS


@pytest.mark.parametrize("payload, reason", [
    ("not json", "not JSON"),
    ([1, 2], "not an object"),
    ({"id": "nope", "action": "GET /"}, "uuid"),
    ({"id": str(uuid.uuid4())}, "action is missing"),
    ({"id": str(uuid.uuid4()), "action": "GET /", "colour": "red"}, "unknown fields"),
    ({"id": str(uuid.uuid4()), "action": "GET /", "actor": {"id": 1}}, "actor is a dict"),
    ({"id": str(uuid.uuid4()), "action": "GET /", "target": "a\x00b"}, "NUL"),
    ({"id": str(uuid.uuid4()), "action": "GET /", "user_agent": "\ud800"}, "not valid Unicode"),
    ({"id": str(uuid.uuid4()), "action": "GET /", "event_type": "direction_issued"},
     "not audit_record"),
])
def test_what_is_not_a_record_is_refused_with_a_reason(payload, reason):
    body = payload if payload == "not json" else json.dumps(payload)
    with pytest.raises(domain.InvalidRecord, match=reason):
        domain.normalize_record(domain.decode(body.encode()))


def test_filters_are_parsed_and_local_times_get_the_configured_zone():
    parsed = domain.parse_filters({"actor": "officer:1", "ip": "", "outcome": None,
                                   "from": "2027-01-31", "to": "2027-02-01T10:00:00+00:00"},
                                  tz="Asia/Almaty")
    assert parsed["actor"] == "officer:1"
    assert "ip" not in parsed and "outcome" not in parsed
    assert parsed["from"].utcoffset() == dt.timedelta(hours=5)
    assert parsed["to"] == dt.datetime(2027, 2, 1, 10, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("filters, field", [
    ({"from": "yesterday"}, "from"),
    ({"to": "2027-13-01"}, "to"),
    ({"to": 5}, "to"),
    ({"from": "2027-02-01", "to": "2027-01-01"}, "from"),
    ({"colour": "red"}, "colour"),
    ({"actor": ["a", "b"]}, "actor"),
])
def test_bad_filters_are_refused_naming_the_field(filters, field):
    with pytest.raises(BadInput) as caught:
        domain.parse_filters(filters)
    assert caught.value.field == field


@pytest.mark.parametrize("page, page_size, field", [
    (0, 10, "page"), ("1", 10, "page"), (1, 0, "page_size"), (1, 501, "page_size"),
    (True, 10, "page"),
])
def test_bad_paging_is_refused(page, page_size, field):
    with pytest.raises(BadInput) as caught:
        domain.check_page(page, page_size)
    assert caught.value.field == field


def test_paging_within_bounds_is_accepted():
    assert domain.check_page(3, 500) == (3, 500)


def test_no_checkpoint_or_a_matching_one_finds_nothing():
    assert domain.checkpoint_problem(None, 10, None) is None
    assert domain.checkpoint_problem({"records": 10, "head": "h10"}, 12, "h10") is None


def test_a_deleted_tail_contradicts_the_checkpoint():
    problem = domain.checkpoint_problem({"records": 10, "head": "h10"}, 9, None)
    assert problem["seq"] == 10
    assert "missing" in problem["problem"]


def test_a_rewritten_chain_contradicts_the_checkpoint_head():
    problem = domain.checkpoint_problem({"records": 10, "head": "h10"}, 12, "other")
    assert problem == {"seq": 10, "problem": "differs from the checkpoint head"}


@pytest.mark.parametrize("value, days", [(None, None), ("null", None), ("", None), (30, 30),
                                         ("365", 365)])
def test_retention_setting(value, days):
    assert domain.retention_days(value) == days


@pytest.mark.parametrize("value", [0, -1, "forever"])
def test_bad_retention_setting_is_refused(value):
    with pytest.raises(ValueError, match="AUDIT_RETENTION_DAYS"):
        domain.retention_days(value)
