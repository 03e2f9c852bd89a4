"""registry: per-queue counts of the queue registry, and an index for one queue of a district.

The queue registry page (05-18) answers with the total of rows its filters match. Counting them
took most of a page's time over 200,000 applications (an index-only count of up to the whole
queue, for every page). ``queue_counts`` keeps the number of listed (not withdrawn) entries per
queue, status, benefit tier and language; statement-level triggers on ``queue_entries`` keep it
in the same transaction as the rows they count, whoever writes them (event handlers, a bulk
copy, reconcile's repairs). A total for filters on these columns is then a sum over a few rows.

``queue_entries_queue_of_district`` serves a page of one queue picked by its district, queue
type and birth year in queue order, without reading the district's other queues.

Revision ID: registry_0002
Revises: registry_0001
Create Date: 2026-11-25
"""

from typing import Sequence, Union

from alembic import op

revision: str = "registry_0002"
down_revision: Union[str, Sequence[str], None] = "registry_0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEY = "district, queue_type, birth_year, language, status, benefit_tier, queue_name"


def _delta(*sources: tuple[str, int]) -> str:
    """Add each source's listed rows (sign +1/-1) to the counts, in key order (two
    transactions touching the same counts lock them in the same order: no deadlock)."""
    rows = " UNION ALL ".join(
        f"SELECT {KEY}, {sign} AS d FROM {table} WHERE status <> 'withdrawn'"
        for table, sign in sources
    )
    return f"""
        INSERT INTO registry.queue_counts AS c ({KEY}, n)
        SELECT {KEY}, sum(d) FROM ({rows}) x
        GROUP BY {KEY} HAVING sum(d) <> 0 ORDER BY {KEY}
        ON CONFLICT ({KEY}) DO UPDATE SET n = c.n + excluded.n;"""


SQL = f"""
CREATE TABLE registry.queue_counts (
    queue_name text COLLATE "C" NOT NULL,
    district text NOT NULL,
    queue_type text NOT NULL,
    birth_year integer NOT NULL,
    language text NOT NULL,
    status text NOT NULL,
    benefit_tier text NOT NULL,
    -- no CHECK (n >= 0): it would refuse the -1 of an ON CONFLICT upsert before the conflict
    n bigint NOT NULL,
    PRIMARY KEY ({KEY})
);

CREATE FUNCTION registry.queue_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_delta(("new_rows", 1))}
    RETURN NULL;
END $$;

CREATE FUNCTION registry.queue_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_delta(("new_rows", 1), ("old_rows", -1))}
    RETURN NULL;
END $$;

CREATE FUNCTION registry.queue_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_delta(("old_rows", -1))}
    RETURN NULL;
END $$;

-- no writes between the first count and the triggers
LOCK TABLE registry.queue_entries IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER queue_counts_insert AFTER INSERT ON registry.queue_entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION registry.queue_counts_insert();
CREATE TRIGGER queue_counts_update AFTER UPDATE ON registry.queue_entries
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION registry.queue_counts_update();
CREATE TRIGGER queue_counts_delete AFTER DELETE ON registry.queue_entries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION registry.queue_counts_delete();

INSERT INTO registry.queue_counts ({KEY}, n)
SELECT {KEY}, count(*) FROM registry.queue_entries WHERE status <> 'withdrawn'
GROUP BY {KEY};

CREATE INDEX queue_entries_queue_of_district ON registry.queue_entries
    (district, queue_type, birth_year, queue_name, in_queue DESC, sort_key)
    WHERE status <> 'withdrawn';
"""


def upgrade() -> None:
    # straight to the driver: the function bodies hold ':' that placeholder parsing would
    # mangle; same connection, so the same transaction as alembic's
    with op.get_bind().connection.driver_connection.cursor() as cursor:
        cursor.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError("the registry's ledger is append-only; restore from a backup")
