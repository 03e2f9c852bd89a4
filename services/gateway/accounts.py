"""Accounts of staff, officers, auditors and operators (the CLI ``kezek users ...`` calls these).

Applicants need no account beforehand: theirs is made when they first sign in. One phone is one
account with one role.
"""

from __future__ import annotations

from typing import Any

from services.common.db import DatabaseAccess
from services.gateway import storage
from services.gateway.auth import ROLES, normalize_phone
from services.gateway.errors import BadInput, Conflict, NotFound

STAFF_ROLES = tuple(r for r in ROLES if r != "applicant")


def add_user(
    db: DatabaseAccess, role: str, phone: str, organization_id: int | None = None
) -> dict[str, Any]:
    """Create an account; adding the same account again returns it unchanged.

    ``staff`` needs the organisation it works for; the other roles must not name one.
    A phone that already has a different account is refused (Conflict).
    """
    if role not in STAFF_ROLES:
        raise BadInput(f"role must be one of {', '.join(STAFF_ROLES)}", "role")
    phone = normalize_phone(phone)
    if role == "staff":
        if organization_id is None:
            raise BadInput("staff accounts need the organisation they work for", "organization_id")
        if (
            isinstance(organization_id, bool)
            or not isinstance(organization_id, int)
            or organization_id < 1
        ):
            raise BadInput("organization_id must be a positive integer", "organization_id")
    elif organization_id is not None:
        raise BadInput(f"{role} accounts do not belong to an organisation", "organization_id")
    with db.transaction() as tx:
        account = storage.account_dict(storage.insert_account(tx, phone, role, organization_id))
    if account["role"] != role or account["organization_id"] != organization_id:
        raise Conflict(
            f"{phone} already has a {account['role']} account", "phone", "ACCOUNT_EXISTS"
        )
    return account


def get_user(db: DatabaseAccess, phone: str) -> dict[str, Any]:
    phone = normalize_phone(phone)
    with db.read() as tx:
        account = storage.account_dict(storage.find_account(tx, phone))
    if account is None:
        raise NotFound(f"no account for {phone}", "phone")
    return account


def list_users(db: DatabaseAccess, role: str | None = None) -> list[dict[str, Any]]:
    if role is not None and role not in ROLES:
        raise BadInput(f"role must be one of {', '.join(ROLES)}", "role")
    with db.read() as tx:
        return [storage.account_dict(r) for r in storage.list_accounts(tx, role)]


def set_disabled(db: DatabaseAccess, phone: str, disabled: bool = True) -> dict[str, Any]:
    """Disable (or enable again) an account: it can no longer sign in. Tokens already issued
    stay valid until they expire (TOKEN_TTL_SECONDS)."""
    phone = normalize_phone(phone)
    with db.transaction() as tx:
        account = storage.account_dict(storage.set_disabled(tx, phone, disabled))
    if account is None:
        raise NotFound(f"no account for {phone}", "phone")
    return account


def disable_user(db: DatabaseAccess, phone: str) -> dict[str, Any]:
    return set_disabled(db, phone, True)
