"""SQL for the gateway schema: accounts, one-time codes, idempotency keys."""

from __future__ import annotations

from typing import Any

from services.common.db import Tx

ACCOUNT_COLUMNS = "id, phone, role, organization_id, created_at, disabled_at"


def account_dict(row) -> dict[str, Any] | None:
    if row is None:
        return None
    m = dict(row._mapping)
    for key in ("created_at", "disabled_at"):
        if m.get(key) is not None:
            m[key] = m[key].isoformat()
    return m


# -- accounts -----------------------------------------------------------------------------------
def find_account(tx: Tx, phone: str, for_update: bool = False):
    lock = " FOR UPDATE" if for_update else ""
    return tx.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM gateway.accounts WHERE phone = :p{lock}", {"p": phone}
    ).first()


def insert_account(tx: Tx, phone: str, role: str, organization_id: int | None):
    """Insert unless the phone has an account already; returns the (new or existing) row."""
    row = tx.execute(
        f"INSERT INTO gateway.accounts (phone, role, organization_id) VALUES (:p, :r, :o) "
        f"ON CONFLICT (phone) DO NOTHING RETURNING {ACCOUNT_COLUMNS}",
        {"p": phone, "r": role, "o": organization_id},
    ).first()
    return row if row is not None else find_account(tx, phone)


def list_accounts(tx: Tx, role: str | None = None) -> list:
    where = "WHERE role = :r " if role else ""
    return tx.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM gateway.accounts {where}ORDER BY id", {"r": role}
    ).all()


def set_disabled(tx: Tx, phone: str, disabled: bool):
    return tx.execute(
        "UPDATE gateway.accounts SET disabled_at = "
        + ("COALESCE(disabled_at, clock_timestamp())" if disabled else "NULL")
        + f" WHERE phone = :p RETURNING {ACCOUNT_COLUMNS}",
        {"p": phone},
    ).first()


# -- one-time codes -----------------------------------------------------------------------------
def codes_sent_since(tx: Tx, phone: str, seconds: float) -> tuple[int, float | None]:
    """How many codes this phone got in the last ``seconds``, and the age of the oldest of them."""
    row = tx.execute(
        "SELECT count(*) AS n, EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) AS age "
        "FROM gateway.otp_codes WHERE phone = :p "
        "AND created_at > clock_timestamp() - make_interval(secs => :s)",
        {"p": phone, "s": seconds},
    ).one()
    return int(row.n), (float(row.age) if row.age is not None else None)


def supersede_codes(tx: Tx, phone: str) -> None:
    tx.execute(
        "UPDATE gateway.otp_codes SET closed_at = clock_timestamp(), closed_reason = 'superseded' "
        "WHERE phone = :p AND closed_at IS NULL",
        {"p": phone},
    )


def insert_code(tx: Tx, phone: str, code_hash: str, ttl_seconds: float):
    return tx.execute(
        "INSERT INTO gateway.otp_codes (phone, code_hash, expires_at) "
        "VALUES (:p, :h, clock_timestamp() + make_interval(secs => :t)) "
        "RETURNING id, expires_at",
        {"p": phone, "h": code_hash, "t": ttl_seconds},
    ).one()


def latest_code(tx: Tx, phone: str):
    """The newest code of the phone, locked, with whether it has expired by the database clock."""
    return tx.execute(
        "SELECT id, code_hash, attempts, closed_at, closed_reason, "
        "expires_at <= clock_timestamp() AS expired "
        "FROM gateway.otp_codes WHERE phone = :p ORDER BY id DESC LIMIT 1 FOR UPDATE",
        {"p": phone},
    ).first()


def count_attempt(tx: Tx, code_id: int, close_reason: str | None) -> None:
    tx.execute(
        "UPDATE gateway.otp_codes SET attempts = attempts + 1, "
        "closed_at = CASE WHEN CAST(:r AS text) IS NULL THEN closed_at ELSE clock_timestamp() END, "
        "closed_reason = COALESCE(CAST(:r AS text), closed_reason) WHERE id = :i",
        {"i": code_id, "r": close_reason},
    )


def close_code(tx: Tx, code_id: int, reason: str) -> None:
    tx.execute(
        "UPDATE gateway.otp_codes SET closed_at = clock_timestamp(), closed_reason = :r "
        "WHERE id = :i AND closed_at IS NULL",
        {"i": code_id, "r": reason},
    )


def delete_old_codes(tx: Tx, older_than_seconds: float) -> int:
    return tx.execute(
        "DELETE FROM gateway.otp_codes "
        "WHERE created_at < clock_timestamp() - make_interval(secs => :s)",
        {"s": older_than_seconds},
    ).rowcount


# -- idempotency keys -----------------------------------------------------------------------------
def claim_idempotency_key(tx: Tx, scope: str, key: str, request_hash: str) -> bool:
    row = tx.execute(
        "INSERT INTO gateway.idempotency_keys (scope, key, request_hash, state) "
        "VALUES (:s, :k, :h, 'pending') ON CONFLICT DO NOTHING RETURNING 1",
        {"s": scope, "k": key, "h": request_hash},
    ).first()
    return row is not None


def get_idempotency_key(tx: Tx, scope: str, key: str):
    return tx.execute(
        "SELECT request_hash, state, status, body, "
        "EXTRACT(EPOCH FROM clock_timestamp() - created_at) AS age "
        "FROM gateway.idempotency_keys WHERE scope = :s AND key = :k FOR UPDATE",
        {"s": scope, "k": key},
    ).first()


def restart_idempotency_key(tx: Tx, scope: str, key: str) -> None:
    tx.execute(
        "UPDATE gateway.idempotency_keys SET created_at = clock_timestamp() "
        "WHERE scope = :s AND key = :k",
        {"s": scope, "k": key},
    )


def finish_idempotency_key(tx: Tx, scope: str, key: str, status: int, body: str) -> None:
    tx.execute(
        "UPDATE gateway.idempotency_keys SET state = 'done', status = :st, body = :b "
        "WHERE scope = :s AND key = :k",
        {"s": scope, "k": key, "st": status, "b": body},
    )


def release_idempotency_key(tx: Tx, scope: str, key: str) -> None:
    tx.execute(
        "DELETE FROM gateway.idempotency_keys WHERE scope = :s AND key = :k AND state = 'pending'",
        {"s": scope, "k": key},
    )


def delete_old_idempotency_keys(tx: Tx, older_than_seconds: float) -> int:
    return tx.execute(
        "DELETE FROM gateway.idempotency_keys "
        "WHERE created_at < clock_timestamp() - make_interval(secs => :s)",
        {"s": older_than_seconds},
    ).rowcount
