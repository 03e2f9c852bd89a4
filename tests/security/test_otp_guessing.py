"""Guessing one-time codes stops after the limit: OTP_MAX_ATTEMPTS wrong guesses spend a code
(even guesses sent all at once, from many addresses), and a phone gets at most OTP_MAX_PER_HOUR
codes, so an hour of guessing tries at most their product of the million codes."""

from __future__ import annotations

import eventlet
from sqlalchemy import text

from services.common.db import DatabaseAccess, get_engine
from services.gateway import accounts
from tests.security.conftest import Client, error_code, new_phone

DEFAULT_MAX_PER_HOUR = 10


def max_attempts(system) -> int:
    return int(system.config["KEZEK"]["OTP_MAX_ATTEMPTS"])


def wrong(code: str, n: int = 1) -> str:
    return f"{(int(code) + n) % 1_000_000:06d}"


def attempts_counted(system, phone: str) -> int:
    with get_engine(system.config["DB_URL"]).connect() as conn:
        return conn.execute(text(
            "SELECT attempts FROM gateway.otp_codes WHERE phone = :p ORDER BY id DESC LIMIT 1"),
            {"p": phone}).scalar()


def test_wrong_guesses_sent_at_once_from_many_addresses_spend_the_code(system):
    phone = new_phone()
    code = system.request_code(Client(system), phone)
    guesses = 6 * max_attempts(system)

    def guess(n):
        return Client(system).post("/api/v1/auth/token", {"phone": phone, "code": wrong(code, n)})

    pool = eventlet.GreenPool(guesses)
    answers = list(pool.imap(guess, range(1, guesses + 1)))
    assert all(r.status_code == 401 for r in answers), [r.text for r in answers if r.ok]
    # only the first OTP_MAX_ATTEMPTS were weighed; the rest found the code spent
    assert attempts_counted(system, phone) == max_attempts(system)
    assert sum(error_code(r) == "OTP_ATTEMPTS_EXCEEDED" for r in answers) == (
        guesses - max_attempts(system))
    r = Client(system).post("/api/v1/auth/token", {"phone": phone, "code": code})
    assert r.status_code == 401 and error_code(r) == "OTP_ATTEMPTS_EXCEEDED", r.text


def test_new_codes_for_one_phone_run_out_within_the_hour(system):
    phone = new_phone()
    limit = int(system.config["KEZEK"].get("OTP_MAX_PER_HOUR", DEFAULT_MAX_PER_HOUR))
    sent = 0
    for _ in range(limit + 3):
        # every request from another address and device: the cap is the phone's
        client = Client(system)
        r = client.post("/api/v1/auth/otp", {"phone": phone})
        if r.status_code != 202:
            break
        sent += 1
        code = system.codes(phone)[-1]
        for n in range(1, max_attempts(system) + 1):
            client.post("/api/v1/auth/token", {"phone": phone, "code": wrong(code, n)})
    assert sent == limit
    assert r.status_code == 429 and error_code(r) == "OTP_RATE_LIMITED", r.text
    assert int(r.headers["Retry-After"]) > 0
    assert len(system.codes(phone)) == limit  # no SMS went out for the refused requests
    # the last code, guessed at OTP_MAX_ATTEMPTS times, is spent as well
    r = Client(system).post("/api/v1/auth/token", {"phone": phone,
                                                    "code": system.codes(phone)[-1]})
    assert r.status_code == 401, r.text


def test_guessing_tells_nothing_about_who_has_an_account(system):
    account_phone = new_phone()
    accounts.add_user(DatabaseAccess(get_engine(system.config["DB_URL"]), "gateway"),
                      role="auditor", phone=account_phone)
    answers = [Client(system).post("/api/v1/auth/token", {"phone": p, "code": "000000"})
               for p in (account_phone, new_phone())]
    assert [r.status_code for r in answers] == [401, 401]
    assert answers[0].json() == answers[1].json()
    # and asking for a code answers the same for both
    answers = [Client(system).post("/api/v1/auth/otp", {"phone": p})
               for p in (account_phone, new_phone())]
    assert [r.status_code for r in answers] == [202, 202]
    assert set(answers[0].json()) == set(answers[1].json())


def test_codes_that_are_not_six_digits_are_not_guesses(system):
    phone = new_phone()
    code = system.request_code(Client(system), phone)
    for bad in ("", "12345", "1234567", "abcdef", "00000a", " " + code, code + "\n", "%"):
        r = Client(system).post("/api/v1/auth/token", {"phone": phone, "code": bad})
        assert r.status_code == 400, (bad, r.text)
    assert attempts_counted(system, phone) == 0
    r = Client(system).post("/api/v1/auth/token", {"phone": phone, "code": code})
    assert r.status_code == 200, r.text
