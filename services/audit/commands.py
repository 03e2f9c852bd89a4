"""What the audit service does, one transaction each: store a batch, take a checkpoint, query,
verify. The service's entrypoints, the batching consumer and tests call these.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from services.audit import domain, storage
from services.common import contracts, ledger
from services.common.amqp import CHECKPOINT_ROUTING_KEY
from services.common.db import DatabaseAccess


def store_batch(db: DatabaseAccess, records: list[dict[str, Any]]) -> int:
    """Append normalized records in one transaction; returns how many were new."""
    if not records:
        return 0
    with db.transaction() as tx:
        return storage.insert_records(tx.conn, records)


def checkpoint(db: DatabaseAccess) -> dict[str, Any] | None:
    """Record (records, head hash) and publish it as audit.audit_checkpoint.

    Returns the checkpoint, or None when nothing was appended since the last one.
    """
    with db.transaction() as tx:
        current = storage.head(tx.conn)
        if current is None:
            return None
        records, head_hash = current
        last = storage.last_checkpoint(tx.conn)
        if last is not None and last["records"] == records and last["head"] == head_hash:
            return None
        row = storage.insert_checkpoint(tx.conn, records, head_hash)
        data = {"records": row["records"], "head": row["head"], "at": row["at"].isoformat()}
        tx.publish(contracts.envelope("audit", "audit_checkpoint", data),
                   routing_key=CHECKPOINT_ROUTING_KEY)
    return data


def query(db: DatabaseAccess, filters: dict[str, Any] | None, page: int = 1,
          page_size: int = 50, tz: str = "Asia/Almaty") -> dict[str, Any]:
    """A page of records matching the filters, newest first."""
    parsed = domain.parse_filters(filters, tz)
    page, page_size = domain.check_page(page, page_size)
    with db.read() as tx:
        items, total = storage.query_records(tx.conn, parsed, (page - 1) * page_size, page_size)
    return {"items": items, "total": total, "page": page, "page_size": page_size}


def devices_of(db: DatabaseAccess, actor: str) -> list[dict[str, Any]]:
    """Device fingerprints an account used, with first/last seen and how many records."""
    actor = domain.check_text("actor", actor)
    with db.read() as tx:
        return storage.devices_of(tx.conn, actor)


def actions_of_device(db: DatabaseAccess, fingerprint: str, page: int = 1,
                      page_size: int = 50) -> dict[str, Any]:
    """A page of records from one device (newest first) and the accounts that used it."""
    fingerprint = domain.check_text("fingerprint", fingerprint)
    result = query(db, {"fingerprint": fingerprint}, page, page_size)
    with db.read() as tx:
        result["actors"] = storage.actors_of_device(tx.conn, fingerprint)
    return result


def verify(db: DatabaseAccess) -> dict[str, Any]:
    """Recompute the hash chain, then hold it against the latest checkpoint."""
    with db.read() as tx:
        # one snapshot for the chain and the checkpoint: a checkpoint committed mid-check
        # must not look like missing records
        tx.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        result = ledger.verify(tx.conn, "audit", "audit_log")
        if not result["ok"]:
            broken = result["broken"]
            found = storage.record_at(tx.conn, broken["seq"])
            return {"ok": False, "records": result["records"],
                    "broken": {"seq": broken["seq"], "id": found[0] if found else None,
                               "problem": broken["problem"]}}
        current = storage.head(tx.conn)
        last_seq = current[0] if current else 0
        cp = storage.last_checkpoint(tx.conn)
        at_cp = storage.record_at(tx.conn, cp["records"]) if cp and cp["records"] else None
        problem = domain.checkpoint_problem(cp, last_seq, at_cp[1] if at_cp else None)
        if problem is not None:
            return {"ok": False, "records": result["records"],
                    "broken": {"seq": problem["seq"], "id": at_cp[0] if at_cp else None,
                               "problem": problem["problem"]}}
    return {"ok": True, "records": result["records"], "head": result["head"]}
