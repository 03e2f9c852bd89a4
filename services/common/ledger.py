"""The append-only ledger: DDL for a service's outbox, inbox and journal, and chain verification.

A *chained* table has columns ``seq``, ``at``, ``prev_hash`` and ``hash``. Its BEFORE INSERT
trigger takes a transaction-scoped advisory lock (one appender at a time per table), numbers the
row after the last one, stamps it with the database clock (never earlier than the previous row:
no back-dating), and sets ``hash = sha256(prev_hash || '|' || row-as-jsonb)``. UPDATE, DELETE
and TRUNCATE are refused by triggers and revoked from PUBLIC. The jsonb text form is canonical
(keys sorted), and the functions pin TimeZone to UTC so every session computes the same text.
"""

from __future__ import annotations

from sqlalchemy import text

GENESIS = "0" * 64

_ROW_HASH = (
    "encode(sha256(convert_to({prev} || '|' || "
    "(to_jsonb({row}) - 'hash' - 'prev_hash')::text, 'UTF8')), 'hex')"
)


def base_sql(schema: str) -> str:
    """Schema, outbox, inbox, journal and the chain/immutability functions of one service."""
    s = schema
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE {s}.outbox (
    id bigserial PRIMARY KEY,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at timestamptz
);
CREATE INDEX outbox_unsent ON {s}.outbox (id) WHERE sent_at IS NULL;

CREATE TABLE {s}.inbox (
    handler text NOT NULL,
    event_id uuid NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (handler, event_id)
);

CREATE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable: % on %.% refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION {s}.chain_append() RETURNS trigger LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    last record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME));
    EXECUTE format('SELECT seq, at, hash FROM %I.%I ORDER BY seq DESC LIMIT 1',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO last;
    NEW.seq := COALESCE(last.seq, 0) + 1;
    NEW.at := GREATEST(clock_timestamp(), COALESCE(last.at, '-infinity'::timestamptz));
    NEW.prev_hash := COALESCE(last.hash, '{GENESIS}');
    NEW.hash := {_ROW_HASH.format(prev="NEW.prev_hash", row="NEW")};
    RETURN NEW;
END $$;

CREATE TABLE {s}.journal (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    stream text NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL,
    corrects bigint REFERENCES {s}.journal (seq),
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX journal_stream ON {s}.journal (stream, seq);
{chain_sql(s, "journal")}
"""


def chain_sql(schema: str, table: str) -> str:
    """Make ``schema.table`` append-only and hash-chained."""
    s, t = schema, table
    return f"""
CREATE TRIGGER {t}_chain BEFORE INSERT ON {s}.{t}
    FOR EACH ROW EXECUTE FUNCTION {s}.chain_append();
CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {s}.{t}
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {s}.{t}
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON {s}.{t} FROM PUBLIC;
"""


def append_at_commit_sql(schema: str, table: str = "journal") -> str:
    """Let a transaction hand ``schema.table`` its rows to be appended AT COMMIT.

    A row inserted into ``<table>_pending`` (stream, kind, data, corrects) is appended to the
    chained table by a deferred constraint trigger when its transaction commits, in the order
    the rows were inserted, and removed from the pending table in the same step; a transaction
    that rolls back appends nothing. The chain trigger works exactly as for a direct INSERT
    (same lock, seq, clock, hash), only later: the table's lock is then taken inside COMMIT
    and held for no client round trip, where a direct INSERT holds it until the client's
    COMMIT arrives. The pending table is empty outside open transactions (so it is unlogged:
    nothing in it can outlive its transaction, and a crash loses nothing committed).
    """
    s, t = schema, table
    return f"""
CREATE UNLOGGED TABLE {s}.{t}_pending (
    id bigserial PRIMARY KEY,
    stream text NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL,
    corrects bigint
);

CREATE FUNCTION {s}.{t}_append_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.{t} (stream, kind, data, corrects)
        VALUES (NEW.stream, NEW.kind, NEW.data, NEW.corrects);
    DELETE FROM {s}.{t}_pending WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER {t}_pending_append AFTER INSERT ON {s}.{t}_pending
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION {s}.{t}_append_pending();
"""


def append_at_commit(tx, rows: list[tuple[str, str, dict]]) -> int:
    """Hand ``(stream, kind, data)`` rows to ``<tx.schema>.journal_pending`` (see
    :func:`append_at_commit_sql`): they are appended to the journal, in this order, when the
    transaction commits. One statement; returns how many."""
    import json

    if not rows:
        return 0
    tx.execute(
        f"INSERT INTO {tx.schema}.journal_pending (stream, kind, data) "
        "SELECT r.s, r.k, r.d FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) "
        "AS (s text, k text, d jsonb)) WITH ORDINALITY AS r(s, k, d, i) ORDER BY r.i",
        {"rows": json.dumps([{"s": s, "k": k, "d": d} for s, k, d in rows], default=str)},
    )
    return len(rows)


def verify(conn, schema: str, table: str = "journal") -> dict:
    """Recompute the chain of a chained table.

    Returns ``{"ok": True, "records": N, "head": hash}`` or ``{"ok": False, "records": N,
    "broken": {"seq", "problem"}}`` naming the first record that does not fit: changed content,
    a missing predecessor (a deleted row), or a chain link that does not match.
    """
    conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    rows = f"{schema}.{table}"
    recomputed = _ROW_HASH.format(prev="t.prev_hash", row="t")
    bad = conn.execute(
        text(
            f"""
            WITH c AS (
                SELECT t.seq, t.hash, t.prev_hash,
                       {recomputed} AS recomputed,
                       lag(t.seq) OVER w AS prev_seq,
                       lag(t.hash) OVER w AS prev_row_hash
                FROM {rows} t WINDOW w AS (ORDER BY t.seq)
            )
            SELECT seq,
                   CASE WHEN recomputed <> hash THEN 'content changed'
                        WHEN seq <> COALESCE(prev_seq, 0) + 1 THEN 'record(s) before it missing'
                        WHEN prev_hash <> COALESCE(prev_row_hash, :genesis) THEN 'chain link broken'
                   END AS problem
            FROM c
            WHERE recomputed <> hash
               OR seq <> COALESCE(prev_seq, 0) + 1
               OR prev_hash <> COALESCE(prev_row_hash, :genesis)
            ORDER BY seq LIMIT 1
            """
        ),
        {"genesis": GENESIS},
    ).first()
    head = conn.execute(
        text(f"SELECT count(*) AS n, (SELECT hash FROM {rows} ORDER BY seq DESC LIMIT 1) AS head "
             f"FROM {rows}")
    ).one()
    if bad is not None:
        return {"ok": False, "records": int(head.n),
                "broken": {"seq": int(bad.seq), "problem": bad.problem}}
    return {"ok": True, "records": int(head.n), "head": head.head or GENESIS}
