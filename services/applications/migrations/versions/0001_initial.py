"""applications: applicants, children, applications, preferences, benefit claims, directions
seen, the parent's feed, idempotency keys; benefit categories seeded from
services/applications/benefit_categories.yaml.

Revision ID: applications_0001
Revises:
Create Date: 2026-11-25
"""

from typing import Sequence, Union

from alembic import op

from services.common.ledger import base_sql

revision: str = "applications_0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = """
CREATE TABLE applications.benefit_categories (
    code text PRIMARY KEY,
    tier text NOT NULL CHECK (tier IN ('out_of_turn', 'first_priority')),
    name_kk text NOT NULL,
    name_ru text NOT NULL,
    position int NOT NULL
);

-- application numbers: 'A' + 9 digits, so lexical order is filing order
CREATE SEQUENCE applications.application_number_seq;

CREATE TABLE applications.applicants (
    id text PRIMARY KEY,                      -- actor id, 'applicant:<phone>'
    iin text NOT NULL CHECK (iin ~ '^[0-9]{12}$'),
    full_name text NOT NULL,
    phone text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE applications.children (
    iin text PRIMARY KEY CHECK (iin ~ '^[0-9]{12}$'),
    full_name text NOT NULL,
    birth_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE applications.applications (
    number text COLLATE "C" PRIMARY KEY CHECK (number ~ '^A[0-9]{9}$'),
    applicant_id text NOT NULL REFERENCES applications.applicants (id),
    child_iin text NOT NULL REFERENCES applications.children (iin),
    queue_type text NOT NULL CHECK (queue_type IN ('general', 'transfer', 'special', 'sanatorium')),
    language text NOT NULL CHECK (language IN ('kk', 'ru')),
    district text NOT NULL,
    birth_year int NOT NULL,
    queue_name text NOT NULL,
    desired_start date NOT NULL,
    current_organization_id int,
    current_group_id int,
    filed_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'offered', 'provided', 'stop_listed', 'withdrawn')),
    status_changed_at timestamptz NOT NULL,
    entry_revision int,                       -- last queue_entry_changed applied
    stop_list jsonb,
    withdrawn_at timestamptz,
    CHECK ((queue_type = 'transfer')
           = (current_organization_id IS NOT NULL AND current_group_id IS NOT NULL)),
    CHECK ((status = 'withdrawn') = (withdrawn_at IS NOT NULL))
);
-- one active application per child and queue type: the database is the referee
CREATE UNIQUE INDEX applications_one_active_per_child
    ON applications.applications (child_iin, queue_type)
    WHERE status NOT IN ('withdrawn', 'provided');
CREATE INDEX applications_by_applicant ON applications.applications (applicant_id, number);

CREATE TABLE applications.preferences (
    application_number text NOT NULL REFERENCES applications.applications (number),
    position smallint NOT NULL CHECK (position >= 1),
    organization_id int NOT NULL,
    PRIMARY KEY (application_number, position),
    UNIQUE (application_number, organization_id)
);

CREATE TABLE applications.benefit_claims (
    application_number text PRIMARY KEY REFERENCES applications.applications (number),
    category text NOT NULL REFERENCES applications.benefit_categories (code),
    document text NOT NULL,
    status text NOT NULL DEFAULT 'claimed' CHECK (status IN ('claimed', 'approved', 'refused')),
    tier text CHECK (tier IN ('out_of_turn', 'first_priority')),
    note text,
    verified_by text,
    verified_at timestamptz,
    CHECK ((status = 'approved') = (tier IS NOT NULL)),
    CHECK ((status = 'claimed') = (verified_at IS NULL))
);

-- directions as allocation reports them (snapshots; applied only when the revision is newer)
CREATE TABLE applications.directions (
    number text PRIMARY KEY,
    application_number text NOT NULL REFERENCES applications.applications (number),
    revision int NOT NULL,
    status text NOT NULL,
    type text,
    organization_id int,
    group_id int,
    issued_at timestamptz,
    expires_at timestamptz,
    closed_at timestamptz,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX directions_by_application
    ON applications.directions (application_number, issued_at DESC);

-- the parent's event feed (05-5)
CREATE TABLE applications.feed (
    id bigserial PRIMARY KEY,
    applicant_id text NOT NULL,
    application_number text NOT NULL REFERENCES applications.applications (number),
    kind text NOT NULL,
    text_kk text NOT NULL,
    text_ru text NOT NULL,
    event_id uuid,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX feed_by_applicant ON applications.feed (applicant_id, at DESC, id DESC);

-- Idempotency-Key: (actor, key) -> the first result
CREATE TABLE applications.idempotency (
    actor_id text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (actor_id, key)
);
"""


def upgrade() -> None:
    from services.applications.storage import seed_benefit_categories

    op.execute(base_sql("applications"))
    op.execute(TABLES)
    seed_benefit_categories(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: no downgrade")
