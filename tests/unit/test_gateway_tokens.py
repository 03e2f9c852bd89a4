"""Bearer tokens and phone numbers of the gateway's sign-in (no I/O)."""

import base64
import json

import pytest

from services.common.errors import BadInput, Unauthorized
from services.gateway import auth

SECRET = "unit-test-secret"
STAFF = {"id": 12, "role": "staff", "organization_id": 7, "phone": "+77010000012"}
APPLICANT = {"id": 3, "role": "applicant", "organization_id": None, "phone": "+77011234567"}


def test_a_token_round_trips_to_the_actor_services_expect():
    issued = auth.issue_token(SECRET, STAFF, 3600, now=1_000_000)
    assert issued["role"] == "staff"
    assert issued["expires_at"] == "1970-01-12T14:46:40+00:00"  # 1_003_600 s, in UTC
    claims = auth.verify_token(SECRET, issued["token"], now=1_000_001)
    assert auth.actor_from_claims(claims, "req-1") == {
        "id": "staff:12",
        "role": "staff",
        "organization_id": 7,
        "request_id": "req-1",
    }


def test_an_applicants_actor_id_is_their_phone():
    claims = auth.verify_token(SECRET, auth.issue_token(SECRET, APPLICANT, 60)["token"])
    assert auth.actor_from_claims(claims, None)["id"] == "applicant:+77011234567"


def test_an_expired_token_is_refused():
    token = auth.issue_token(SECRET, STAFF, 60, now=1_000_000)["token"]
    with pytest.raises(Unauthorized) as err:
        auth.verify_token(SECRET, token, now=1_000_060)
    assert err.value.code == "TOKEN_EXPIRED"


def test_a_token_signed_with_another_secret_is_refused():
    token = auth.issue_token("another-secret", STAFF, 60)["token"]
    with pytest.raises(Unauthorized) as err:
        auth.verify_token(SECRET, token)
    assert err.value.code == "INVALID_TOKEN"


def test_changing_the_role_inside_a_token_breaks_its_signature():
    version, payload, signature = auth.issue_token(SECRET, APPLICANT, 60)["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "auditor"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        auth.verify_token(SECRET, f"{version}.{forged}.{signature}")


@pytest.mark.parametrize("token", ["", "abc", "v1.e30", "v2.e30.sig", "v1.!!!.???", "v1..."])
def test_garbage_tokens_are_refused_not_crashed_on(token):
    with pytest.raises(Unauthorized):
        auth.verify_token(SECRET, token)


def test_a_validly_signed_token_with_nonsense_claims_is_refused():
    payload = base64.urlsafe_b64encode(b'{"role":"root","sub":1,"exp":9999999999}')
    payload = payload.rstrip(b"=").decode()
    signed = f"v1.{payload}"
    token = f"{signed}.{auth._sign(SECRET, signed)}"
    with pytest.raises(Unauthorized):
        auth.verify_token(SECRET, token)


def test_bearer_header_parsing():
    assert auth.bearer_token(None) is None
    assert auth.bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert auth.bearer_token("bearer   xyz ") == "xyz"
    with pytest.raises(Unauthorized):
        auth.bearer_token("Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthorized):
        auth.bearer_token("Bearer ")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("+77011234567", "+77011234567"),
        ("+7 (701) 123-45-67", "+77011234567"),
        ("8 701 123 45 67", "+77011234567"),
        ("77011234567", "+77011234567"),
        ("+996555123456", "+996555123456"),
    ],
)
def test_phones_are_normalised_to_e164(raw, expected):
    assert auth.normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["", "12345", "+0123456789", "phone", None, 77011234567])
def test_bad_phones_are_refused_naming_the_field(raw):
    with pytest.raises(BadInput) as err:
        auth.normalize_phone(raw)
    assert err.value.field == "phone"


def test_code_hashes_depend_on_phone_code_and_secret():
    h = auth.code_hash(SECRET, "+77011234567", "123456")
    assert h != auth.code_hash(SECRET, "+77011234567", "123457")
    assert h != auth.code_hash(SECRET, "+77011234568", "123456")
    assert h != auth.code_hash("other", "+77011234567", "123456")
    assert "123456" not in h
