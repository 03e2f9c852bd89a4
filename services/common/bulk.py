"""Multi-row forms of Tx.journal and Tx.publish for bulk paths (demo loader, imports).

One statement per call whatever the number of rows: the journal's chain trigger still runs for
every row (seq, database time, hash chain, in the order given), and every event still gets its
own envelope and outbox row, exactly as ``Tx.journal`` / ``Tx.publish`` would write them one by
one. Only the round trips are saved.

Rows travel as one JSON array (``rows_json``) read with ``jsonb_to_recordset``: dumping long
Python lists as PostgreSQL arrays costs more than the database work itself.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from services.common.db import Tx


def rows_json(rows: Iterable[dict[str, Any]]) -> str:
    """A list of row dicts as the JSON text ``jsonb_to_recordset`` reads (``default=str`` as
    Tx.journal and Tx.publish: times in a form PostgreSQL reads back)."""
    return json.dumps(list(rows), default=str)


def journal_many(tx: Tx, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
    """Append ``(stream, kind, data)`` ledger rows in this order; returns how many."""
    items = [{"s": stream, "k": kind, "d": data} for stream, kind, data in rows]
    if not items:
        return 0
    # WITH ORDINALITY + ORDER BY: the rows reach the chain trigger in the order given
    tx.execute(
        f"INSERT INTO {tx.schema}.journal (stream, kind, data) "
        "SELECT r.s, r.k, r.d FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) "
        "AS (s text, k text, d jsonb)) WITH ORDINALITY AS r(s, k, d, i) ORDER BY r.i",
        {"rows": rows_json(items)},
    )
    return len(items)


def publish_many(tx: Tx, events: Iterable[dict[str, Any]], exchange: str | None = None,
                 routing_key: str | None = None) -> int:
    """Write event envelopes (contracts.envelope) to the outbox, in this order."""
    return outbox_rows(tx, [(exchange or f"{event['source']}.events",
                             routing_key or event["event_type"], event) for event in events])


def outbox_rows(tx: Tx, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
    """Outbox rows ``(exchange, routing_key, envelope)`` in this order, in one statement: the
    rows Tx.publish would write one by one (the same JSON). Returns how many."""
    items = [{"x": x, "k": k, "p": p} for x, k, p in rows]
    if not items:
        return 0
    tx.execute(
        f"INSERT INTO {tx.schema}.outbox (exchange, routing_key, payload) "
        "SELECT r.x, r.k, r.p FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) "
        "AS (x text, k text, p jsonb)) WITH ORDINALITY AS r(x, k, p, i) ORDER BY r.i",
        {"rows": rows_json(items)},
    )
    tx.published += len(items)
    return len(items)
