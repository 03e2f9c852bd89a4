"""applications: application numbers compare byte-wise (COLLATE "C") in every table.

``applications.number`` is COLLATE "C"; the columns that refer to it were created with the
database's default collation, so a join or a correlated subquery on them (the preferences of
an application in every read of one) could not use their indexes: with 200,000 applications
reading one application took about 40 ms of sequential scans. Same collation, index scans.

Revision ID: applications_0003
Revises: applications_0002
Create Date: 2026-11-27
"""

from typing import Sequence, Union

from alembic import op

revision: str = "applications_0003"
down_revision: Union[str, Sequence[str], None] = "applications_0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SQL = """
ALTER TABLE applications.preferences ALTER COLUMN application_number TYPE text COLLATE "C";
ALTER TABLE applications.benefit_claims ALTER COLUMN application_number TYPE text COLLATE "C";
ALTER TABLE applications.directions ALTER COLUMN application_number TYPE text COLLATE "C";
ALTER TABLE applications.feed ALTER COLUMN application_number TYPE text COLLATE "C";
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: no downgrade")
