"""queue: entries, their order, candidates per organisation, reservations per place

Revision ID: queue_0001
Revises:
Create Date: 2025-11-25

"""
from collections.abc import Sequence

from alembic import op

from services.common.ledger import base_sql

revision: str = "queue_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# application numbers compare byte-wise (COLLATE "C") so the tie-break is the same in SQL and
# in services.queue.domain, whatever the database's locale.
TABLES = """
CREATE TABLE queue.entries (
    application_number text COLLATE "C" PRIMARY KEY,
    queue_name text NOT NULL,
    district text NOT NULL,
    queue_type text NOT NULL
        CHECK (queue_type IN ('general', 'transfer', 'special', 'sanatorium')),
    group_kind text NOT NULL,
    birth_year integer NOT NULL,
    language text NOT NULL,
    preferred_organizations bigint[] NOT NULL DEFAULT '{}',
    filed_at timestamptz NOT NULL,
    benefit_category text,
    claimed_tier text NOT NULL DEFAULT 'none'
        CHECK (claimed_tier IN ('out_of_turn', 'first_priority', 'none')),
    benefit_verified boolean NOT NULL DEFAULT false,
    tier_rank smallint NOT NULL,
    status text NOT NULL
        CHECK (status IN ('queued', 'offered', 'provided', 'stop_listed', 'withdrawn')),
    stop_entered_at timestamptz,
    stop_exits_at timestamptz,
    stop_reason text,
    applicant_id text,
    applicant_name text,
    child_name text,
    current_organization_id bigint,
    current_group_id bigint,
    revision integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'stop_listed') = (stop_reason IS NOT NULL))
);
-- the queue number is a count over this index: entries still in the queue, in queue order
CREATE INDEX entries_queue_order ON queue.entries
    (queue_name, tier_rank, filed_at, application_number)
    WHERE status IN ('queued', 'offered', 'stop_listed');
CREATE INDEX entries_stop_list_exits ON queue.entries (stop_exits_at)
    WHERE status = 'stop_listed' AND stop_exits_at IS NOT NULL;
CREATE INDEX entries_applicant ON queue.entries (applicant_id);

-- One row per (queued entry, preferred organisation): what reserve_next scans, already in
-- queue order for one organisation, age period, language and group kind. Rows exist only while
-- the entry is queued; they are written in the transaction that changes the entry.
CREATE TABLE queue.candidates (
    application_number text COLLATE "C" NOT NULL REFERENCES queue.entries,
    organization_id bigint NOT NULL,
    birth_year integer NOT NULL,
    language text NOT NULL,
    group_kind text NOT NULL,
    tier_rank smallint NOT NULL,
    filed_at timestamptz NOT NULL,
    PRIMARY KEY (application_number, organization_id)
);
CREATE INDEX candidates_pick ON queue.candidates
    (organization_id, birth_year, language, group_kind, tier_rank, filed_at, application_number);

-- An entry reserved for a place. At most one open reservation per place and per application:
-- the database, not the code, makes the winner unique when several instances reserve at once.
CREATE TABLE queue.reservations (
    id bigserial PRIMARY KEY,
    place_id text NOT NULL,
    application_number text COLLATE "C" NOT NULL REFERENCES queue.entries,
    kind text NOT NULL CHECK (kind IN ('priority', 'claim')),
    organization_id bigint,
    birth_year integer NOT NULL,
    language text NOT NULL,
    group_type text NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'released', 'closed')),
    direction_number text,
    reserved_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed_at timestamptz,
    close_reason text
);
CREATE UNIQUE INDEX reservations_one_open_per_place ON queue.reservations (place_id)
    WHERE status = 'open';
CREATE UNIQUE INDEX reservations_one_open_per_application ON queue.reservations
    (application_number) WHERE status = 'open';
CREATE INDEX reservations_place ON queue.reservations (place_id);

-- the newest revision of each direction applied here (snapshot events: apply only if newer)
CREATE TABLE queue.directions (
    number text PRIMARY KEY,
    revision integer NOT NULL,
    status text NOT NULL,
    place_id text,
    application_number text COLLATE "C",
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- withdrawal or benefit decisions that arrived before the application itself (events of
-- different types travel on different queues); applied when the entry is created
CREATE TABLE queue.early_events (
    id bigserial PRIMARY KEY,
    application_number text COLLATE "C" NOT NULL,
    event_type text NOT NULL,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX early_events_application ON queue.early_events (application_number, id);
"""


def upgrade() -> None:
    op.execute(base_sql("queue"))
    op.execute(TABLES)


def downgrade() -> None:
    raise NotImplementedError("the queue ledger is append-only: restore from a backup instead")
