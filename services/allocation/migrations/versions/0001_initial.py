"""allocation: releases, places, directions, vacancy claims

Revision ID: allocation_0001
Revises:
Create Date: 2025-11-25

"""
from typing import Sequence, Union

from alembic import op

from services.common.ledger import base_sql

revision: str = "allocation_0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = """
-- direction numbers: D + 9 digits
CREATE SEQUENCE allocation.direction_number_seq;

-- One row per release: by staff (kind staff), again after a closed direction (re_release) or
-- the old place of a transferred child (transfer). source_direction makes the automatic ones
-- idempotent per direction; idempotency_key the staff ones.
CREATE TABLE allocation.releases (
    release_id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('staff', 're_release', 'transfer')),
    organization_id bigint NOT NULL,
    group_id bigint NOT NULL,
    places integer NOT NULL CHECK (places BETWEEN 1 AND 50),
    place_ids uuid[] NOT NULL DEFAULT '{}',
    source_direction text,
    idempotency_key text,
    actor_id text,
    actor_role text,
    released_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX releases_idempotency ON allocation.releases (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX releases_source_direction ON allocation.releases (kind, source_direction)
    WHERE source_direction IS NOT NULL;

-- A released place and its current state (priority -> directed -> filled, or
-- priority -> vacancy -> directed); the group snapshot is taken at release.
CREATE TABLE allocation.places (
    place_id uuid PRIMARY KEY,
    release_id bigint NOT NULL REFERENCES allocation.releases,
    organization_id bigint NOT NULL,
    group_id bigint NOT NULL,
    organization_name text,
    district text,
    ownership text,
    address text,
    group_name text,
    birth_year integer NOT NULL,
    language text NOT NULL,
    group_type text NOT NULL,
    status text NOT NULL CHECK (status IN ('priority', 'directed', 'vacancy', 'filled')),
    revision integer NOT NULL DEFAULT 1,
    released_at timestamptz NOT NULL,
    priority_starts_at timestamptz,
    priority_ends_at timestamptz,
    vacancy_opened_at timestamptz,
    direction_number text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (status <> 'vacancy' OR vacancy_opened_at IS NOT NULL),
    CHECK (status <> 'priority' OR priority_ends_at IS NOT NULL)
);
CREATE INDEX places_group_open ON allocation.places (group_id) WHERE status <> 'filled';
CREATE INDEX places_priority_due ON allocation.places (priority_ends_at)
    WHERE status = 'priority';

CREATE TABLE allocation.directions (
    number text COLLATE "C" PRIMARY KEY,
    place_id uuid NOT NULL REFERENCES allocation.places,
    application_number text COLLATE "C" NOT NULL,
    applicant_id text,
    type text NOT NULL CHECK (type IN ('priority', 'vacancy', 'transfer')),
    status text NOT NULL
        CHECK (status IN ('issued', 'enrolled', 'declined', 'expired', 'revoked')),
    revision integer NOT NULL DEFAULT 1,
    organization_id bigint NOT NULL,
    organization_name text,
    group_id bigint NOT NULL,
    birth_year integer NOT NULL,
    language text NOT NULL,
    child_name text,
    current_organization_id bigint,
    current_group_id bigint,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    closed_at timestamptz,
    reason text,
    CHECK ((status = 'issued') = (closed_at IS NULL))
);
-- one open direction per place and per child: the database, not the code, picks one winner
CREATE UNIQUE INDEX directions_one_open_per_place ON allocation.directions (place_id)
    WHERE status = 'issued';
CREATE UNIQUE INDEX directions_one_open_per_application ON allocation.directions
    (application_number) WHERE status = 'issued';
CREATE INDEX directions_expiry ON allocation.directions (expires_at) WHERE status = 'issued';
CREATE INDEX directions_place ON allocation.directions (place_id);

-- Claims on a vacancy. A place can become a vacancy more than once (after a declined
-- direction), so a claim belongs to one opening of the vacancy: vacancy_opened_at.
CREATE TABLE allocation.claims (
    place_id uuid NOT NULL REFERENCES allocation.places,
    vacancy_opened_at timestamptz NOT NULL,
    application_number text COLLATE "C" NOT NULL,
    applicant_id text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome text NOT NULL DEFAULT 'pooled' CHECK (outcome IN ('pooled', 'won', 'lost')),
    direction_number text,
    PRIMARY KEY (place_id, vacancy_opened_at, application_number)
);
CREATE INDEX claims_pooled ON allocation.claims (place_id) WHERE outcome = 'pooled';
"""


def upgrade() -> None:
    op.execute(base_sql("allocation"))
    op.execute(TABLES)


def downgrade() -> None:
    raise NotImplementedError("the allocation ledger is append-only: restore from a backup")
