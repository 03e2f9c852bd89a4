"""SQL of the audit schema: audit_log (hash-chained, append-only) and checkpoints."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.audit.domain import EQUALITY_FILTERS, RECORD_FIELDS

ITEM_COLUMNS = ("seq", "id", "at", *[f for f in RECORD_FIELDS if f != "id"], "prev_hash", "hash")


def insert_records(conn: Connection, records: list[dict[str, Any]]) -> int:
    """Append records in one multi-row INSERT; a known id is skipped. Returns rows stored.

    The chain trigger fires per row in VALUES order and sees the rows this statement
    inserted before it, so one statement extends the chain correctly.
    """
    if not records:
        return 0
    params = [record.get(name) for record in records for name in RECORD_FIELDS]
    return len(conn.exec_driver_sql(_insert_sql(len(records)), tuple(params)).all())


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    # built by hand and cached: compiling a 200-row VALUES through SQLAlchemy took longer than
    # PostgreSQL took to store it
    row = "(" + ", ".join(["%s"] * len(RECORD_FIELDS)) + ")"
    return (f"INSERT INTO audit.audit_log ({', '.join(RECORD_FIELDS)}) VALUES "
            + ", ".join([row] * rows) + " ON CONFLICT (id) DO NOTHING RETURNING seq")


def _item(row) -> dict[str, Any]:
    item = dict(row._mapping)
    item["id"] = str(item["id"])
    item["at"] = item["at"].isoformat()
    return item


def _where(filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    for name in EQUALITY_FILTERS:
        if name in filters:
            clauses.append(f"{name} = :{name}")
            params[name] = filters[name]
    if "from" in filters:
        clauses.append("at >= :t_from")
        params["t_from"] = filters["from"]
    if "to" in filters:
        clauses.append("at <= :t_to")
        params["t_to"] = filters["to"]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def query_records(conn: Connection, filters: dict[str, Any], offset: int,
                  limit: int) -> tuple[list[dict[str, Any]], int]:
    """Records matching validated filters, newest first; and how many match in all."""
    where, params = _where(filters)
    rows = conn.execute(
        text(f"SELECT {', '.join(ITEM_COLUMNS)} FROM audit.audit_log{where} "
             "ORDER BY seq DESC LIMIT :limit OFFSET :offset"),
        {**params, "limit": limit, "offset": offset},
    ).all()
    total = conn.execute(text(f"SELECT count(*) FROM audit.audit_log{where}"), params).scalar()
    return [_item(r) for r in rows], int(total)


def devices_of(conn: Connection, actor: str) -> list[dict[str, Any]]:
    """Fingerprints an actor's requests came from, most recently used first."""
    rows = conn.execute(
        text("""
            SELECT fingerprint, min(at) AS first_seen, max(at) AS last_seen,
                   count(*) AS records, count(DISTINCT ip) AS ips
            FROM audit.audit_log
            WHERE actor = :actor AND fingerprint IS NOT NULL
            GROUP BY fingerprint
            ORDER BY max(seq) DESC
        """),
        {"actor": actor},
    ).all()
    return [
        {"fingerprint": r.fingerprint, "first_seen": r.first_seen.isoformat(),
         "last_seen": r.last_seen.isoformat(), "records": int(r.records), "ips": int(r.ips)}
        for r in rows
    ]


def actors_of_device(conn: Connection, fingerprint: str) -> list[str]:
    rows = conn.execute(
        text("SELECT actor FROM audit.audit_log WHERE fingerprint = :f AND actor IS NOT NULL "
             "GROUP BY actor ORDER BY max(seq) DESC"),
        {"f": fingerprint},
    ).all()
    return [r.actor for r in rows]


def head(conn: Connection) -> tuple[int, str] | None:
    """(seq, hash) of the newest record, or None for an empty log."""
    row = conn.execute(
        text("SELECT seq, hash FROM audit.audit_log ORDER BY seq DESC LIMIT 1")).first()
    return (int(row.seq), row.hash) if row else None


def record_at(conn: Connection, seq: int) -> tuple[str, str] | None:
    """(id, hash) of the record numbered ``seq``."""
    row = conn.execute(text("SELECT id, hash FROM audit.audit_log WHERE seq = :s"),
                       {"s": seq}).first()
    return (str(row.id), row.hash) if row else None


def last_checkpoint(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(
        text("SELECT seq, at, records, head FROM audit.checkpoints ORDER BY seq DESC LIMIT 1")
    ).first()
    if row is None:
        return None
    return {"seq": int(row.seq), "at": row.at, "records": int(row.records), "head": row.head}


def insert_checkpoint(conn: Connection, records: int, head_hash: str) -> dict[str, Any]:
    row = conn.execute(
        text("INSERT INTO audit.checkpoints (records, head) VALUES (:r, :h) "
             "RETURNING seq, at, records, head"),
        {"r": records, "h": head_hash},
    ).one()
    return {"seq": int(row.seq), "at": row.at, "records": int(row.records), "head": row.head}

