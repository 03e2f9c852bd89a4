"""Journal rows appended at commit (services.common.ledger.append_at_commit): the allocation and
queue services hand their journal rows to ``<schema>.journal_pending``; the database appends
them to the chained journal when the transaction commits."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text

from services.common import ledger
from services.common.db import DatabaseAccess

SCHEMAS = ("allocation", "queue")


def _rows(db_engine, schema: str, stream: str) -> list:
    with db_engine.connect() as conn:
        return conn.execute(text(
            f"SELECT seq, at, kind, data FROM {schema}.journal WHERE stream = :s ORDER BY seq"),
            {"s": stream}).all()


@pytest.mark.parametrize("schema", SCHEMAS)
def test_rows_reach_the_journal_at_commit_in_order_and_the_chain_verifies(db_engine, schema):
    db = DatabaseAccess(db_engine, schema)
    stream = f"test:{uuid.uuid4()}"
    with db.transaction() as tx:
        assert ledger.append_at_commit(tx, [(stream, "first", {"n": 1}),
                                            (stream, "second", {"n": 2})]) == 2
        # not in the journal yet: appended when this transaction commits
        assert tx.execute(f"SELECT count(*) FROM {schema}.journal WHERE stream = :s",
                          {"s": stream}).scalar() == 0
    rows = _rows(db_engine, schema, stream)
    assert [r.kind for r in rows] == ["first", "second"]
    assert [r.data for r in rows] == [{"n": 1}, {"n": 2}]
    assert rows[1].seq > rows[0].seq and rows[1].at >= rows[0].at
    with db_engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {schema}.journal_pending")).scalar() == 0
        assert ledger.verify(conn, schema)["ok"] is True


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_rolled_back_transaction_appends_nothing(db_engine, schema):
    db = DatabaseAccess(db_engine, schema)
    stream = f"test:{uuid.uuid4()}"
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            ledger.append_at_commit(tx, [(stream, "never", {})])
            raise RuntimeError("roll back")
    assert _rows(db_engine, schema, stream) == []


def test_an_open_transaction_with_pending_rows_does_not_hold_the_journal(db_engine):
    """The journal's lock (one appender at a time) is taken inside COMMIT: a transaction that
    has handed rows over and not committed yet does not make another appender wait."""
    db = DatabaseAccess(db_engine, "allocation")
    first, second = f"test:{uuid.uuid4()}", f"test:{uuid.uuid4()}"
    done = threading.Event()
    with db.transaction() as tx:
        ledger.append_at_commit(tx, [(first, "slow", {})])

        def other():
            with db.transaction() as tx2:
                ledger.append_at_commit(tx2, [(second, "quick", {})])
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert done.wait(30), "the second appender waited for the first one's commit"
        thread.join()
    (quick,), (slow,) = _rows(db_engine, "allocation", second), _rows(db_engine, "allocation",
                                                                      first)
    assert slow.seq > quick.seq  # appended in commit order
    with db_engine.connect() as conn:
        assert ledger.verify(conn, "allocation")["ok"] is True
