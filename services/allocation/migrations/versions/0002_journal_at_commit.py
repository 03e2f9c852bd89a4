"""allocation: journal rows appended at commit (services.common.ledger.append_at_commit_sql)

The allocation service's busiest transactions hand their journal rows to
``allocation.journal_pending``; a deferred trigger appends them to the chained journal when the
transaction commits, so the journal's lock (one appender at a time) is held inside COMMIT only,
never across a client round trip. The journal itself is unchanged.

Revision ID: allocation_0002
Revises: allocation_0001
Create Date: 2026-11-25
"""
from typing import Sequence, Union

from alembic import op

from services.common.ledger import append_at_commit_sql

revision: str = "allocation_0002"
down_revision: Union[str, Sequence[str], None] = "allocation_0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(append_at_commit_sql("allocation"))


def downgrade() -> None:
    op.execute("DROP TABLE allocation.journal_pending; DROP FUNCTION allocation.journal_append_pending()")
