"""Sign-in with a one-time code, signed bearer tokens, and the actor passed to services.

Tokens are ``v1.<payload>.<signature>`` with base64url parts; the payload is JSON with the account
id (``sub``), ``role``, ``org`` (organisation id or null), ``phone`` (applicants only: their
actor id is ``applicant:<phone>``) and ``exp`` (Unix time); the signature is HMAC-SHA256 with
``TOKEN_SECRET`` over ``v1.<payload>``. A token is checked without the database.

One-time codes: 6 digits, kept as an HMAC (a leaked table does not give the codes away), valid
``OTP_TTL_SECONDS``, at most ``OTP_MAX_ATTEMPTS`` guesses, used once; a new code replaces the
phone's earlier one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

from services.common.db import DatabaseAccess, lock_key
from services.gateway import storage
from services.gateway.errors import BadInput, Forbidden, RateLimited, Unauthorized
from services.gateway.sms import SmsSender

ROLES = ("applicant", "staff", "officer", "auditor", "operator")
TOKEN_VERSION = "v1"
PHONE_RE = re.compile(r"^\+[1-9][0-9]{9,14}$")
CODE_RE = re.compile(r"^[0-9]{6}$")


# -- phones ---------------------------------------------------------------------------------------
def normalize_phone(value: Any, field: str = "phone") -> str:
    """E.164 form of a phone number: '+77011234567'. Accepts spaces, dashes, brackets and the
    Kazakh trunk prefix 8 ('8 701 123 45 67')."""
    if not isinstance(value, str):
        raise BadInput("phone must be a string like +77011234567", field)
    digits = re.sub(r"[\s()\-]", "", value)
    if re.fullmatch(r"8[0-9]{10}", digits):
        digits = "+7" + digits[1:]
    elif re.fullmatch(r"7[0-9]{10}", digits):
        digits = "+" + digits
    if not PHONE_RE.fullmatch(digits):
        raise BadInput("phone must be an international number like +77011234567", field)
    return digits


# -- tokens ---------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, signed_part: str) -> str:
    return _b64(hmac.new(secret.encode(), signed_part.encode(), hashlib.sha256).digest())


def issue_token(
    secret: str, account: dict[str, Any], ttl_seconds: float, now: float | None = None
) -> dict[str, Any]:
    """``{"token", "role", "expires_at"}`` for an account row."""
    issued = time.time() if now is None else now
    expires = int(issued + ttl_seconds)
    claims = {
        "sub": int(account["id"]),
        "role": account["role"],
        "org": account.get("organization_id"),
        "exp": expires,
    }
    if account["role"] == "applicant":
        claims["phone"] = account["phone"]
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed_part = f"{TOKEN_VERSION}.{payload}"
    return {
        "token": f"{signed_part}.{_sign(secret, signed_part)}",
        "role": account["role"],
        "expires_at": dt.datetime.fromtimestamp(expires, dt.timezone.utc).isoformat(),
    }


def verify_token(secret: str, token: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid token; Unauthorized (INVALID_TOKEN / TOKEN_EXPIRED) otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise Unauthorized("the token is not valid; sign in again", None, "INVALID_TOKEN")
    signed_part = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, signed_part), parts[2]):
        raise Unauthorized("the token is not valid; sign in again", None, "INVALID_TOKEN")
    try:
        claims = json.loads(_unb64(parts[1]))
        valid = (
            isinstance(claims, dict)
            and claims.get("role") in ROLES
            and isinstance(claims.get("sub"), int)
            and isinstance(claims.get("exp"), int)
        )
    except ValueError:
        valid = False
    if not valid:
        raise Unauthorized("the token is not valid; sign in again", None, "INVALID_TOKEN")
    if claims["exp"] <= (time.time() if now is None else now):
        raise Unauthorized("the token has expired; sign in again", None, "TOKEN_EXPIRED")
    return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header; None when there is no header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use Authorization: Bearer <token>", None, "INVALID_TOKEN")
    return token.strip()


def actor_id(claims: dict[str, Any]) -> str:
    if claims["role"] == "applicant":
        return f"applicant:{claims.get('phone')}"
    return f"{claims['role']}:{claims['sub']}"


def actor_from_claims(claims: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """The ``actor`` argument of service RPC methods (docs/rpc.md)."""
    return {
        "id": actor_id(claims),
        "role": claims["role"],
        "organization_id": claims.get("org"),
        "request_id": request_id,
    }


# -- one-time codes -------------------------------------------------------------------------------
def code_hash(secret: str, phone: str, code: str) -> str:
    return hmac.new(secret.encode(), f"otp|{phone}|{code}".encode(), hashlib.sha256).hexdigest()


def request_code(
    db: DatabaseAccess,
    sender: SmsSender,
    phone: Any,
    *,
    secret: str,
    ttl_seconds: float,
    max_per_hour: int,
) -> dict[str, Any]:
    """Send a new code to the phone (202 answer). Same answer whether or not an account exists."""
    phone = normalize_phone(phone)
    code = f"{secrets.randbelow(10**6):06d}"
    with db.transaction() as tx:
        # serialise senders per phone so the hourly cap holds under concurrency
        tx.execute("SELECT pg_advisory_xact_lock(:k)", {"k": lock_key(f"gateway.otp:{phone}")})
        sent, oldest_age = storage.codes_sent_since(tx, phone, 3600)
        if sent >= max_per_hour:
            raise RateLimited(
                "too many codes for this phone; try again later",
                3600 - (oldest_age or 0),
                "OTP_RATE_LIMITED",
            )
        storage.supersede_codes(tx, phone)
        row = storage.insert_code(tx, phone, code_hash(secret, phone, code), ttl_seconds)
    sender.send_code(phone, code)
    return {"phone": phone, "expires_at": row.expires_at.isoformat()}


_REFUSALS = {
    "used": ("OTP_USED", "this code has already been used; request a new one"),
    "superseded": ("OTP_INVALID", "this code was replaced by a newer one"),
    "attempts": ("OTP_ATTEMPTS_EXCEEDED", "too many wrong codes; request a new one"),
    "expired": ("OTP_EXPIRED", "the code has expired; request a new one"),
}


def exchange_code(
    db: DatabaseAccess, phone: Any, code: Any, *, secret: str, max_attempts: int
) -> dict[str, Any]:
    """Check a code and return the phone's account (an applicant account is made on first
    sign-in). Wrong, expired, spent or exhausted codes raise Unauthorized."""
    phone = normalize_phone(phone)
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise BadInput("code must be the 6 digits of the SMS", "code")
    refusal: tuple[str, str] | None = None
    with db.transaction() as tx:
        row = storage.latest_code(tx, phone)
        if row is None:
            refusal = ("OTP_INVALID", "no code was sent to this phone; request one")
        elif row.closed_at is not None:
            refusal = _REFUSALS.get(row.closed_reason, _REFUSALS["superseded"])
        elif row.expired:
            storage.close_code(tx, row.id, "expired")
            refusal = _REFUSALS["expired"]
        elif not hmac.compare_digest(row.code_hash, code_hash(secret, phone, code)):
            spent = row.attempts + 1 >= max_attempts
            storage.count_attempt(tx, row.id, "attempts" if spent else None)
            refusal = ("OTP_INVALID", "wrong code" + ("; request a new one" if spent else ""))
        else:
            storage.close_code(tx, row.id, "used")
            account = storage.account_dict(storage.insert_account(tx, phone, "applicant", None))
    # the transaction above committed: a wrong guess is counted even though we refuse
    if refusal is not None:
        raise Unauthorized(refusal[1], "code", refusal[0])
    if account["disabled_at"] is not None:
        raise Forbidden("this account is disabled", None, "ACCOUNT_DISABLED")
    return account
