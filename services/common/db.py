"""The database dependency: SQLAlchemy 2 Core over psycopg 3, one PostgreSQL schema per service.

A service declares ``db = Database("queue")`` and uses::

    with self.db.transaction() as tx:
        if not tx.claim_event("queue.on_application_filed", event["event_id"]):
            return                                  # redelivered: already handled
        tx.execute(text("..."), {...})              # the effect
        tx.journal("application:123", "entered_queue", {...})  # ledger row, database time
        tx.publish(contracts.queue_entry_changed(...))          # outbox row, same transaction

Everything written in one ``transaction()`` commits or rolls back together; the outbox relay
(services.common.outbox) publishes the outbox rows after the commit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import threading
import time
from typing import Any, Iterator, Mapping

from psycopg.rows import dict_row

from nameko.extensions import DependencyProvider
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.engine import Connection, Engine

from services.common import contracts

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
# a pooled connection idle longer than this is pinged before use (see ping_when_idle)
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Check a pooled connection with a round trip only when it has been idle a while.

    ``pool_pre_ping`` pings on every checkout: a round trip to PostgreSQL before every command,
    about a tenth of a short read's cost. A connection returned to the pool a moment ago was
    working then; a server restart takes longer than ``idle_seconds``, so every connection it
    broke has been idle at least that long when next taken, and is pinged then. A failed ping
    discards the connection and the pool takes another (SQLAlchemy's DisconnectionError)."""

    @event.listens_for(engine, "checkin")
    def _stamp(dbapi_connection, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, proxy) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            ok = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is done
            raise DisconnectionError(f"pooled connection failed its ping: {exc!r}") from exc
        if not ok:
            raise DisconnectionError("pooled connection failed its ping")


def get_engine(url: str, pool_size: int = 24, max_overflow: int = 6) -> Engine:
    """One engine per database URL per process (all services in one runner share it)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=600,
                connect_args={"connect_timeout": 5},
            )
            ping_when_idle(engine)
            _engines[url] = engine
        return engine


def engine_for(config: dict[str, Any]) -> Engine:
    """The engine of a service process, its pool sized by DB_POOL_SIZE and DB_MAX_OVERFLOW:
    every process holds up to their sum in connections, and PostgreSQL refuses clients past
    its max_connections (100 by default), so many processes on one server need small pools."""
    return get_engine(config["DB_URL"], int(config.get("DB_POOL_SIZE") or 24),
                      int(config.get("DB_MAX_OVERFLOW") or 6))


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Tx:
    """One database transaction with the reliability helpers bound to a service's schema."""

    def __init__(self, conn: Connection, schema: str):
        self.conn = conn
        self.schema = schema
        self.published = 0
        # a batch's transaction (SharedAccess): its outbox rows are written together, and
        # what the steps leave in before_commit runs once, just before it commits
        self.shared = False
        self.before_commit: list = []
        self._deferred: list | None = None
        self._journal_deferred: list | None = None
        self._claimed: tuple[str, set[str], set[str]] | None = None  # see claim_events
        self._prefetched: dict[str, dict] = {}  # see take_prefetched

    def execute(self, statement, params=None):
        if isinstance(statement, str):
            statement = text(statement)
        return self.conn.execute(statement, params or {})

    def claim_events(self, handler: str, event_ids: list[str]) -> None:
        """Record the events of a batch in the inbox in one statement; ``claim_event`` for
        this handler then answers from what it found (True once for each event that was not
        there yet) instead of a statement each."""
        ids = list(dict.fromkeys(str(e).lower() for e in event_ids))
        fresh = self.conn.execute(
            text(
                f"INSERT INTO {self.schema}.inbox (handler, event_id) "
                "SELECT :h, e FROM unnest(CAST(:ids AS uuid[])) AS e "
                "ON CONFLICT DO NOTHING RETURNING event_id::text"
            ),
            {"h": handler, "ids": ids},
        ).scalars().all()
        self._claimed = (handler, set(ids), set(fresh))

    def claim_event(self, handler: str, event_id: str) -> bool:
        """Record (handler, event_id) in the inbox; False if it was already handled."""
        claimed = self._claimed
        if claimed is not None and claimed[0] == handler and str(event_id).lower() in claimed[1]:
            key = str(event_id).lower()
            if key in claimed[2]:
                claimed[2].discard(key)  # a second claim of it in the same batch: False
                return True
            return False
        row = self.conn.execute(
            text(
                f"INSERT INTO {self.schema}.inbox (handler, event_id) VALUES (:h, :e) "
                "ON CONFLICT DO NOTHING RETURNING 1"
            ),
            {"h": handler, "e": event_id},
        ).first()
        return row is not None

    def publish(self, event: dict[str, Any], exchange: str | None = None,
                routing_key: str | None = None) -> None:
        """Write an event envelope (see contracts.envelope) to the outbox in this transaction
        (in a batch's transaction, with the batch's other events in one statement at its end)."""
        if self.shared:
            if self._deferred is None:
                self._deferred = []
                self.before_commit.append(self._publish_deferred)
            self._deferred.append((exchange or f"{event['source']}.events",
                                   routing_key or event["event_type"], event))
            return
        self.conn.execute(
            text(
                f"INSERT INTO {self.schema}.outbox (exchange, routing_key, payload) "
                "VALUES (:x, :k, CAST(:p AS jsonb))"
            ),
            {
                "x": exchange or f"{event['source']}.events",
                "k": routing_key or event["event_type"],
                "p": json.dumps(event, default=str),
            },
        )
        self.published += 1

    def _publish_deferred(self) -> None:
        from services.common.bulk import outbox_rows

        rows, self._deferred = self._deferred or [], None
        outbox_rows(self, rows)

    def audit(self, record: dict[str, Any]) -> None:
        """A system action for the audit log, delivered through the outbox."""
        from services.common.amqp import AUDIT_EXCHANGE

        self.publish(contracts.audit_record(**record), exchange=AUDIT_EXCHANGE,
                     routing_key="audit_record")

    def journal(self, stream: str, kind: str, data: dict[str, Any],
                corrects: int | None = None) -> dict[str, Any] | None:
        """Append a ledger row; the database sets seq, time and the hash chain. In a batch's
        transaction (as Tx.publish) the rows wait and are appended in one statement at its
        end, in the order they were made, and None is returned."""
        if self.shared and corrects is None:
            if self._journal_deferred is None:
                self._journal_deferred = []
                self.before_commit.append(self._journal_write_deferred)
            self._journal_deferred.append((stream, kind, data))
            return None
        if self._journal_deferred:  # a correction goes after the rows made before it
            self._journal_write_deferred()
        row = self.conn.execute(
            text(
                f"INSERT INTO {self.schema}.journal (stream, kind, data, corrects) "
                "VALUES (:s, :k, CAST(:d AS jsonb), :c) RETURNING seq, at, hash"
            ),
            {"s": stream, "k": kind, "d": json.dumps(data, default=str), "c": corrects},
        ).mappings().one()
        return dict(row)

    def _journal_write_deferred(self) -> None:
        from services.common.bulk import journal_many

        rows, self._journal_deferred = self._journal_deferred or [], None
        journal_many(self, rows)

    def take_prefetched(self, name: str, key: Any, keys: list | None, read_many) -> Any:
        """A row a batch reads together. In a batch's transaction with ``keys`` given, the
        first call for ``name`` reads the rows of all ``keys`` with one
        ``read_many(tx, keys) -> {key: row}``; each row is then handed out once. None when
        there is none to hand out (not a batch, a key not among them or not found, or handed
        out already: a second read of it in the batch sees it as it is by then): the caller
        then reads it itself."""
        if not (self.shared and keys):
            return None
        rows = self._prefetched.get(name)
        if rows is None:
            rows = self._prefetched[name] = read_many(self, keys)
        return rows.pop(key, None)

    def try_lock(self, name: str) -> bool:
        """Transaction-scoped advisory lock: True for exactly one holder at a time."""
        return bool(
            self.conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)}
            ).scalar()
        )

    def now(self):
        return self.conn.execute(text("SELECT clock_timestamp()")).scalar()


# SQLAlchemy's own pattern for text() bind parameters, so a statement means the same to both
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)", re.UNICODE)


@functools.lru_cache(maxsize=256)
def psycopg_style(sql: str) -> str:
    """A statement written with ``:name`` parameters (as ``text()`` takes them) in psycopg's
    ``%(name)s`` style, its literal ``%`` doubled."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%")).replace("\\:", ":")


class DatabaseAccess:
    """What a worker gets: transactions on the service's schema."""

    def __init__(self, engine: Engine, schema: str, on_publish=None):
        self.engine = engine
        self.schema = schema
        self._on_publish = on_publish

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.engine.connect() as conn:
            with conn.begin():
                tx = Tx(conn, self.schema)
                yield tx
            # committed
            if tx.published and self._on_publish:
                self._on_publish()

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only transaction (no outbox wake-up)."""
        with self.engine.connect() as conn:
            with conn.begin():
                yield Tx(conn, self.schema)

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows (dicts) of one read-only statement (``:name`` parameters), run outside a
        transaction: the statement is its own snapshot. It goes straight to psycopg on a pooled
        connection, without BEGIN and COMMIT round trips and without SQLAlchemy's statement and
        row layers, which on the hottest reads (the queue-number lookup, a registry page) cost
        as much CPU as the statement itself. A connection that fails a statement, or is
        interrupted in one (a caller's deadline), is discarded, never reused half-way."""
        fairy = self.engine.raw_connection()
        conn = fairy.driver_connection
        try:
            conn.autocommit = True
            with conn.cursor(row_factory=dict_row) as cursor:
                cursor.execute(psycopg_style(sql), params or {})
                found = cursor.fetchall()
            conn.autocommit = False
        except BaseException:
            fairy.invalidate()
            raise
        finally:
            fairy.close()
        return found


class BatchFailed(Exception):
    """A step of a batch (see :func:`each`) raised inside one of its transactions and went on:
    its part of the shared transaction cannot be told apart, so the whole batch is undone."""


class SharedAccess:
    """A DatabaseAccess whose every ``transaction()`` and ``read()`` is the same transaction,
    on one connection: the steps of a batch (:func:`each`) commit together. An error raised
    inside one of them marks the batch broken even if a caller catches it, because what that
    step wrote before it cannot be rolled back alone."""

    def __init__(self, access: DatabaseAccess, conn: Connection):
        self.engine = access.engine
        self.schema = access.schema
        self.tx = Tx(conn, access.schema)
        self.tx.shared = True
        self.broken: BaseException | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            yield self.tx
        except BaseException as exc:
            if self.broken is None:
                self.broken = exc
            raise

    read = transaction

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.tx.conn.execute(text(sql), params or {}).mappings()]


def each(db: DatabaseAccess, items: list, handle, claim: str | None = None) -> list:
    """``[handle(db, item) for item in items]``, with every transaction and read of all the
    items one transaction that commits at the end: a batch of event handlers pays one
    connection checkout, BEGIN and COMMIT (and its WAL flush) instead of one per event, and
    wakes the outbox relay once. Each item sees what the ones before it wrote. If any raises,
    nothing of the batch is written (and the error is raised); a lone item runs with ``db``
    itself. Outbox rows (``Tx.publish``) and whatever the steps left in ``tx.before_commit``
    are written once, at the end. The log lines of each item carry its ``request_id``.

    ``claim``: the items are event payloads, and ``handle`` begins with
    ``tx.claim_event(claim, payload["event_id"])`` (reading the inbox no other way): their
    inbox rows are then written in one statement for the batch (:meth:`Tx.claim_events`)."""
    from services.common.logs import request_id_var

    def step(access, item):
        if isinstance(item, Mapping) and "request_id" in item:
            request_id_var.set(item.get("request_id") or None)
        return handle(access, item)

    if len(items) == 1:
        return [step(db, items[0])]
    with db.engine.connect() as conn:
        with conn.begin():
            shared = SharedAccess(db, conn)
            if claim is not None:
                shared.tx.claim_events(claim, [item["event_id"] for item in items])
            outcomes = [step(shared, item) for item in items]
            if shared.broken is None:
                hooks = shared.tx.before_commit
                while hooks:  # the writes the steps left for the end (Tx.publish and others)
                    hooks.pop(0)()
            if shared.broken is not None:
                raise BatchFailed(f"a step raised {shared.broken!r}") from shared.broken
    if shared.tx.published and db._on_publish:
        db._on_publish()
    return outcomes


class Database(DependencyProvider):
    """Nameko dependency: ``db = Database("queue")``. Also runs the outbox relay."""

    def __init__(self, schema: str, relay: bool = True):
        self.schema = schema
        self.relay_enabled = relay
        self.relay = None

    def setup(self):
        from services.common.config import settings
        from services.common.outbox import OutboxRelay

        config = self.container.config
        self.engine = engine_for(config)
        if self.relay_enabled:
            s = settings(config)
            self.relay = OutboxRelay(
                self.engine,
                self.schema,
                config["AMQP_URI"],
                poll_seconds=float(s.get("OUTBOX_POLL_SECONDS", 1.0)),
                batch=int(s.get("OUTBOX_BATCH", 500)),
                service=self.container.service_name,
            )

    def start(self):
        if self.relay:
            self.relay.start(self.container.spawn_managed_thread)

    def stop(self):
        if self.relay:
            self.relay.stop()

    def kill(self):
        self.stop()

    def access(self) -> DatabaseAccess:
        return DatabaseAccess(self.engine, self.schema, self.relay.wake if self.relay else None)

    def get_dependency(self, worker_ctx) -> DatabaseAccess:
        return self.access()


class GroupedWakeDatabase(Database):
    """The database dependency, whose commits wake the outbox relay a moment later
    (``OUTBOX_WAKE_DELAY_SECONDS``, default 0.02) rather than at once: in a storm the relay
    then publishes the events of many transactions in one batch (one locking SELECT, one
    confirmed publish, one UPDATE) instead of a few events per cycle, for a few milliseconds
    more on each event's way. Nothing else changes: the rows are in the outbox at commit."""

    def setup(self):
        from services.common.config import settings

        super().setup()
        self.wake_delay = float(settings(self.container.config).get(
            "OUTBOX_WAKE_DELAY_SECONDS", 0.02))
        self._wake_due = False

    def _wake_soon(self) -> None:
        if self.relay is None or self._wake_due:
            return
        if self.wake_delay <= 0:
            self.relay.wake()
            return
        self._wake_due = True

        def wake():
            self._wake_due = False
            self.relay.wake()

        import eventlet

        eventlet.spawn_after(self.wake_delay, wake)

    def access(self) -> DatabaseAccess:
        return DatabaseAccess(self.engine, self.schema, self._wake_soon if self.relay else None)
