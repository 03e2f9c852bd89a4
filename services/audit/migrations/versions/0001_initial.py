"""audit: the hash-chained audit log and its checkpoints

Revision ID: audit_0001
Revises:
Create Date: 2025-11-25

"""
from typing import Sequence, Union

from alembic import op

from services.common.ledger import base_sql, chain_sql

revision: str = "audit_0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FILTERED = ("actor", "role", "action", "target", "ip", "fingerprint", "outcome", "request_id")


def upgrade() -> None:
    op.execute(base_sql("audit"))
    # seq, at, prev_hash and hash are set by the chain trigger (database clock, no back-dating);
    # id is the record's own uuid: a redelivered record is dropped by the unique constraint
    op.execute("""
CREATE TABLE audit.audit_log (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    id uuid NOT NULL UNIQUE,
    request_id text,
    actor text,
    role text,
    action text NOT NULL,
    target text,
    outcome text,
    ip text,
    forwarded_for text,
    user_agent text,
    accept_language text,
    fingerprint text,
    server_fingerprint text,
    body_digest text,
    service text,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX audit_log_at ON audit.audit_log (at);
""")
    # (column, seq): equality filter plus newest-first order from one index
    for column in FILTERED:
        op.execute(f"CREATE INDEX audit_log_{column} ON audit.audit_log ({column}, seq)")
    op.execute(chain_sql("audit", "audit_log"))
    # what the head of the chain was at a moment; also published, so a deleted tail is noticed
    op.execute("""
CREATE TABLE audit.checkpoints (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    records bigint NOT NULL,
    head text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
""")
    op.execute(chain_sql("audit", "checkpoints"))


def downgrade() -> None:
    raise NotImplementedError("the audit log is append-only; restore from a backup instead")
