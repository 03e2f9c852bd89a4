"""gateway: accounts, one-time sign-in codes, idempotency keys

Revision ID: gateway_0001
Revises:
Create Date: 2025-11-25

"""

from typing import Sequence, Union

from alembic import op

from services.common.ledger import base_sql

revision: str = "gateway_0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(base_sql("gateway"))
    op.execute("""
CREATE TABLE gateway.accounts (
    id bigserial PRIMARY KEY,
    phone text NOT NULL UNIQUE,
    role text NOT NULL
        CHECK (role IN ('applicant', 'staff', 'officer', 'auditor', 'operator')),
    organization_id bigint,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    disabled_at timestamptz,
    -- staff belong to exactly one organisation; nobody else belongs to one
    CHECK ((role = 'staff') = (organization_id IS NOT NULL))
);

-- codes are kept hashed (HMAC with the token secret); closed_reason says why one is spent
CREATE TABLE gateway.otp_codes (
    id bigserial PRIMARY KEY,
    phone text NOT NULL,
    code_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    closed_at timestamptz,
    closed_reason text CHECK (closed_reason IN ('used', 'superseded', 'attempts', 'expired'))
);
CREATE INDEX otp_codes_phone ON gateway.otp_codes (phone, id DESC);
CREATE INDEX otp_codes_created ON gateway.otp_codes (created_at);

-- Idempotency-Key of mutating requests, scoped by actor: the first response is replayed
CREATE TABLE gateway.idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'done')),
    status integer,
    body text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON gateway.idempotency_keys (created_at);
""")


def downgrade() -> None:
    raise NotImplementedError("restore from a backup instead")
