"""registry: master data (organisations, groups, districts) and the public read models

Revision ID: registry_0001
Revises:
Create Date: 2025-11-25

"""
from typing import Sequence, Union

from alembic import op

from services.common.ledger import base_sql

# revision identifiers, used by Alembic.
revision: str = "registry_0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SCHEMA_SQL = """
-- master data ----------------------------------------------------------------------------------
CREATE TABLE registry.districts (
    name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE registry.organizations (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    address text NOT NULL,
    district text NOT NULL,
    ownership text NOT NULL CHECK (ownership IN ('state', 'private')),
    kind text NOT NULL
        CHECK (kind IN ('kindergarten', 'nursery', 'mini_center', 'sanatorium', 'special')),
    languages text[] NOT NULL,
    monthly_fee_kzt integer NOT NULL DEFAULT 0 CHECK (monthly_fee_kzt >= 0),
    revision integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX organizations_district ON registry.organizations (district, id);
CREATE INDEX organizations_updated ON registry.organizations (updated_at);

CREATE TABLE registry.groups (
    id bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES registry.organizations (id),
    name text NOT NULL,
    group_type text NOT NULL
        CHECK (group_type IN ('general', 'special', 'sanatorium', 'short_stay')),
    birth_year integer NOT NULL,
    language text NOT NULL CHECK (language IN ('kk', 'ru')),
    capacity integer NOT NULL CHECK (capacity >= 0),
    enrolled integer NOT NULL DEFAULT 0 CHECK (enrolled >= 0),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX groups_organization ON registry.groups (organization_id, id);
CREATE INDEX groups_fit ON registry.groups (birth_year, language, group_type, organization_id);
CREATE INDEX groups_updated ON registry.groups (updated_at);

-- queue registry (05-18) and lookup (05-22), from queue.queue_entry_changed --------------------
-- The queue number is computed on read: 1 + the in-queue entries of the same queue whose
-- sort_key is smaller. sort_key spells the queue order (benefit tier, filing moment to the
-- microsecond, application number) as one "C"-collated string, so that count, a page and the
-- window over a page are each one tight index range scan (PostgreSQL does not stop a b-tree
-- scan at a multi-column row comparison, but it does at a bound on one column).
CREATE TABLE registry.queue_entries (
    application_number text COLLATE "C" PRIMARY KEY,
    revision integer NOT NULL,
    queue_name text COLLATE "C" NOT NULL,
    district text NOT NULL,
    queue_type text NOT NULL,
    birth_year integer NOT NULL,
    language text NOT NULL,
    status text NOT NULL,
    benefit_tier text NOT NULL DEFAULT 'none',
    filed_at timestamptz NOT NULL,
    stop_list jsonb,
    applicant_name text NOT NULL,
    child_name text NOT NULL,
    preferred_organizations bigint[] NOT NULL DEFAULT '{}',
    republished_at timestamptz NOT NULL,
    in_queue boolean GENERATED ALWAYS AS (
        status IN ('queued', 'offered', 'stop_listed')
    ) STORED,
    sort_key text COLLATE "C" GENERATED ALWAYS AS (
        CASE benefit_tier WHEN 'out_of_turn' THEN '0' WHEN 'first_priority' THEN '1' ELSE '2' END
        || lpad(((extract(epoch FROM filed_at - '1970-01-01 00:00:00+00'::timestamptz)
                  * 1000000)::bigint)::text, 20, '0')
        || application_number
    ) STORED
);
-- the public registry never lists withdrawn applications: partial indexes, smaller and
-- usable for index-only counts
CREATE INDEX queue_entries_order ON registry.queue_entries
    (queue_name, in_queue DESC, sort_key) WHERE status <> 'withdrawn';
CREATE INDEX queue_entries_district ON registry.queue_entries
    (district, queue_name, in_queue DESC, sort_key) WHERE status <> 'withdrawn';
CREATE INDEX queue_entries_filters ON registry.queue_entries
    (birth_year, language, queue_type) WHERE status <> 'withdrawn';
CREATE INDEX queue_entries_prefs ON registry.queue_entries USING gin (preferred_organizations);
CREATE INDEX queue_entries_republished ON registry.queue_entries (republished_at);

-- places (vacancies 05-19), from allocation.place_released / place_changed ---------------------
-- ids that another service mints are kept as jsonb so they come back exactly as they were sent
CREATE TABLE registry.places (
    place_id jsonb PRIMARY KEY,
    revision integer NOT NULL,
    status text NOT NULL,
    organization_id bigint NOT NULL,
    group_id bigint,
    release_id jsonb,
    birth_year integer,
    language text,
    group_type text,
    released_at timestamptz,
    priority_starts_at timestamptz,
    priority_ends_at timestamptz,
    vacancy_opened_at timestamptz,
    direction_number text,
    listed boolean GENERATED ALWAYS AS (status IN ('priority', 'vacancy')) STORED,
    republished_at timestamptz NOT NULL
);
CREATE INDEX places_listed ON registry.places (priority_starts_at, place_id) WHERE listed;
CREATE INDEX places_listed_org ON registry.places (organization_id) WHERE listed;
CREATE INDEX places_republished ON registry.places (republished_at);

-- place-release protocol (05-20): one row per place_released event ------------------------------
CREATE TABLE registry.releases (
    id bigserial PRIMARY KEY,
    place_id jsonb NOT NULL,
    release_revision integer NOT NULL,
    revision integer NOT NULL,
    release_id jsonb,
    organization_id bigint NOT NULL,
    organization_name text,
    ownership text,
    address text,
    district text,
    group_id bigint,
    group_name text,
    group_type text,
    birth_year integer,
    language text,
    released_at timestamptz,
    priority_starts_at timestamptz,
    priority_ends_at timestamptz,
    republished_at timestamptz NOT NULL,
    UNIQUE (place_id, release_revision)
);
CREATE INDEX releases_order ON registry.releases (released_at DESC, id DESC);
CREATE INDEX releases_org ON registry.releases (organization_id, released_at DESC);
CREATE INDEX releases_republished ON registry.releases (republished_at);

-- directions protocol (05-21), from allocation.direction_issued / direction_changed -------------
CREATE TABLE registry.directions (
    number text COLLATE "C" PRIMARY KEY,
    revision integer NOT NULL,
    status text NOT NULL,
    type text NOT NULL,
    place_id jsonb,
    organization_id bigint NOT NULL,
    group_id bigint,
    application_number text,  -- kept for joins, never shown in the public protocol
    child_name text NOT NULL,
    birth_year integer,
    language text,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz,
    closed_at timestamptz,
    reason text,
    republished_at timestamptz NOT NULL
);
CREATE INDEX directions_order ON registry.directions (issued_at DESC, number DESC);
CREATE INDEX directions_org ON registry.directions (organization_id, issued_at DESC);
CREATE INDEX directions_republished ON registry.directions (republished_at);

-- anonymised statistic facts (05-23): one row per counted happening, no person in it ------------
CREATE TABLE registry.stat_facts (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    day date NOT NULL,
    district text,
    queue_type text,
    birth_year integer,
    language text,
    organization_id bigint,
    direction_type text
);
CREATE INDEX stat_facts_kind_day ON registry.stat_facts (kind, day);
CREATE INDEX stat_facts_at ON registry.stat_facts (at);
-- events taken in per day and source (05-23.6, interaction with the rest of the system)
CREATE INDEX inbox_handled ON registry.inbox (handled_at);
"""


def upgrade() -> None:
    """Ledger tables, then the registry's own tables."""
    # straight to the driver without parameters: the DDL holds % and : that placeholder
    # parsing would mangle; same connection, so the same transaction as alembic's
    with op.get_bind().connection.driver_connection.cursor() as cursor:
        cursor.execute(base_sql("registry"))
        cursor.execute(SCHEMA_SQL)


def downgrade() -> None:
    raise NotImplementedError("the registry's ledger is append-only; restore from a backup")
