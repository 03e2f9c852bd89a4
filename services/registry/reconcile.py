"""``kezek registry reconcile``: hold each registry read model against its source service.

The registry's read models are fed by events; this checks them the other way round. Each source
service exports snapshots of what it holds, a page at a time, over RPC (docs/rpc.md, "export"):

=============  ===========================  =============================================
read model     registry table               source (RPC)
=============  ===========================  =============================================
``queue``      ``queue_entries``            ``queue.export_entries`` (queue_entry_changed)
``places``     ``places``                   ``allocation.export_places`` (place_changed)
``directions`` ``directions``               ``allocation.export_directions``
``releases``   ``releases`` (05-20 rows)    ``allocation.export_releases`` (every
                                            place_released event, from allocation's journal)
=============  ===========================  =============================================

Every snapshot is compared with the registry's row of the same key (revision and every field
the event carries, as the registry's own event appliers clean them); rows the source lacks are
``extra``, rows the registry lacks ``missing``. A release protocol row is keyed by place and
the revision the place had when released, as the ``place_released`` handler keys it.

The services keep running meanwhile, so a row may differ only because its event is still on
its way. Differences are therefore looked at again (registry first, then the source, so a
registry row can never legitimately be ahead) until they are gone or ``settle`` seconds have
passed; only those that remain are reported.

``repair`` writes the source's snapshot with the registry's own storage functions, and deletes
extra rows. It replaces a row only while it is still the row that was compared (or older than
the snapshot): an event applied meanwhile is newer and wins, and the row is counted as skipped.

Not reconciled: organisations, groups and districts (the registry is their source, not a read
model), the children enrolled in a group (an officer's starting figure plus enrolments; repair
does not move it), and the anonymised statistic facts (counts of what happened; repair adds
none). The repair changes no inbox row: events that arrive later are still applied by revision.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping

from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.exceptions import UnknownService

from services.common.db import DatabaseAccess, Tx, get_engine
from services.common.errors import BadInput, DomainError
from services.registry import domain, storage

S = "registry"
MODELS = ("queue", "places", "directions", "releases")
DEFAULT_PAGE_SIZE = 5000  # the sources export at most 5,000 a page: fewer calls
DEFAULT_SETTLE_SECONDS = 5.0
RECHECK_SECONDS = 0.5


# -- comparing values ----------------------------------------------------------------------------


def _time(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(value: Any) -> Any:
    """jsonb as stored or as sent: strings of JSON are read, other values kept."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _stop_list(value: Any) -> dict[str, Any] | None:
    value = _json(value)
    if not value:
        return None
    return {k: (_time(v) if k.endswith("_at") else v) for k, v in dict(value).items()}


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value or []]


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps({k: _show(v) if isinstance(v, dt.datetime) else v
                           for k, v in value.items()}, ensure_ascii=False, sort_keys=True)
    return repr(value)


# -- one difference ------------------------------------------------------------------------------


@dataclass
class Difference:
    model: str
    key: Hashable
    kind: str  # missing | extra | differs
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name: (registry, source)
    source: dict[str, Any] | None = None  # the source snapshot, cleaned (None when extra)
    registry_revision: int | None = None  # the registry row's revision when compared

    @property
    def label(self) -> str:
        if isinstance(self.key, tuple):
            return "@".join(str(k) for k in self.key)
        return str(self.key)

    def line(self) -> str:
        head = f"{self.model} {self.label}:"
        if self.kind == "missing":
            return (f"{head} missing from the registry (source revision "
                    f"{self.source.get('revision')})")
        if self.kind == "extra":
            return f"{head} extra in the registry (the source has no such row)"
        parts = [f"{name} registry={_show(reg)} source={_show(src)}"
                 for name, (reg, src) in self.fields.items()]
        return f"{head} differs: " + "; ".join(parts)


# -- the read models -----------------------------------------------------------------------------


class Model:
    """One read model: how to page its source, read its registry rows, compare and repair."""

    name: str
    table: str
    key_sql: str  # the registry column(s) naming a row
    fields: tuple[str, ...]  # compared fields
    normalize: dict[str, Callable[[Any], Any]] = {}

    # source side
    def page(self, rpc, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        raise NotImplementedError

    def by_keys(self, rpc, keys: list[Hashable]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def clean(self, item: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def key(self, row: Mapping[str, Any]) -> Hashable:
        raise NotImplementedError

    # registry side
    def rows(self, tx: Tx, keys: list[Hashable]) -> dict[Hashable, dict[str, Any]]:
        raise NotImplementedError

    def all_keys(self, tx: Tx) -> list[Hashable]:
        # only the keys: 200,000 of them are a few megabytes
        result = tx.execute(f"SELECT {self.key_sql} FROM {S}.{self.table}").mappings()
        return [self.key(r) for r in result]

    # comparing
    def value(self, name: str, value: Any) -> Any:
        return self.normalize.get(name, lambda v: v)(value)

    def compare(self, key: Hashable, row: Mapping[str, Any] | None,
                src: Mapping[str, Any] | None) -> Difference | None:
        if row is None and src is None:
            return None
        if row is None:
            return Difference(self.name, key, "missing", source=dict(src))
        revision = _int(row.get("revision"))
        if src is None:
            return Difference(self.name, key, "extra", registry_revision=revision)
        fields = {}
        for name in self.fields:
            reg, new = self.value(name, row.get(name)), self.value(name, src.get(name))
            if reg != new:
                fields[name] = (reg, new)
        if not fields:
            return None
        return Difference(self.name, key, "differs", fields, dict(src), revision)

    # repairing: "repaired" or "skipped"
    def repair(self, tx: Tx, diff: Difference) -> str:
        raise NotImplementedError


def _unchanged(current: Mapping[str, Any] | None, diff: Difference) -> bool:
    """May repair overwrite this row? Only the row that was compared, or one older than the
    source's snapshot (an event applied since the comparison is newer: it wins)."""
    if current is None:
        return diff.kind == "missing"
    if diff.kind == "missing":
        return False  # an event inserted it meanwhile
    if current["revision"] == diff.registry_revision:
        return True
    return diff.source is not None and current["revision"] < diff.source["revision"]


class QueueModel(Model):
    name, table, key_sql = "queue", "queue_entries", "application_number"
    fields = ("revision", "queue_name", "district", "queue_type", "birth_year", "language",
              "status", "benefit_tier", "filed_at", "stop_list", "applicant_name", "child_name",
              "preferred_organizations")
    normalize = {"revision": _int, "birth_year": _int, "filed_at": _time,
                 "stop_list": _stop_list, "preferred_organizations": _ints}

    def page(self, rpc, after, limit):
        page = rpc.queue.export_entries(after, limit)
        return page["items"], page["next"]

    def by_keys(self, rpc, keys):
        return rpc.queue.export_entries(None, 1, list(keys))["items"]

    def clean(self, item):
        return domain.clean_entry(item)

    def key(self, row):
        return str(row["application_number"])

    def rows(self, tx, keys):
        result = tx.execute(
            f"SELECT {', '.join(('application_number',) + self.fields)} "
            f"FROM {S}.queue_entries WHERE application_number = ANY(CAST(:k AS text[]))",
            {"k": list(keys)}).mappings()
        return {self.key(r): dict(r) for r in result}

    def repair(self, tx, diff):
        current = storage.lock_entry(tx, diff.key)
        if not _unchanged(current, diff):
            return "skipped"
        if diff.kind == "extra":
            tx.execute(f"DELETE FROM {S}.queue_entries WHERE application_number = :k",
                       {"k": diff.key})
        elif current is None:
            if not storage.insert_entry(tx, diff.source):
                return "skipped"
        else:
            storage.update_entry(tx, diff.source)
        return "repaired"


class PlaceModel(Model):
    name, table, key_sql = "places", "places", "place_id"
    fields = ("revision", "status", "organization_id", "group_id", "release_id", "birth_year",
              "language", "group_type", "released_at", "priority_starts_at", "priority_ends_at",
              "vacancy_opened_at", "direction_number")
    normalize = {"revision": _int, "organization_id": _int, "group_id": _int,
                 "release_id": _json, "birth_year": _int, "released_at": _time,
                 "priority_starts_at": _time, "priority_ends_at": _time,
                 "vacancy_opened_at": _time, "direction_number": _text}

    def page(self, rpc, after, limit):
        page = rpc.allocation.export_places(after, limit)
        return page["items"], page["next"]

    def by_keys(self, rpc, keys):
        return rpc.allocation.export_places(None, 1, list(keys))["items"]

    def clean(self, item):
        return domain.clean_place(item)

    def key(self, row):
        return str(_json(row["place_id"]))

    def rows(self, tx, keys):
        result = tx.execute(
            f"SELECT {', '.join(('place_id',) + self.fields)} FROM {S}.places "
            "WHERE place_id = ANY(CAST(:k AS jsonb[]))",
            {"k": [json.dumps(k) for k in keys]}).mappings()
        return {self.key(r): dict(r) for r in result}

    def repair(self, tx, diff):
        current = storage.lock_place(tx, diff.key)
        if not _unchanged(current, diff):
            return "skipped"
        if diff.kind == "extra":
            tx.execute(f"DELETE FROM {S}.places WHERE place_id = CAST(:k AS jsonb)",
                       {"k": json.dumps(diff.key)})
        elif current is None:
            if not storage.insert_place(tx, diff.source):
                return "skipped"
        else:
            storage.update_place(tx, diff.source)
        return "repaired"


class DirectionModel(Model):
    name, table, key_sql = "directions", "directions", "number"
    fields = ("revision", "status", "type", "place_id", "organization_id", "group_id",
              "application_number", "child_name", "birth_year", "language", "issued_at",
              "expires_at", "closed_at", "reason")
    normalize = {"revision": _int, "place_id": _json, "organization_id": _int,
                 "group_id": _int, "birth_year": _int, "issued_at": _time,
                 "expires_at": _time, "closed_at": _time}

    def page(self, rpc, after, limit):
        page = rpc.allocation.export_directions(after, limit)
        return page["items"], page["next"]

    def by_keys(self, rpc, keys):
        return rpc.allocation.export_directions(None, 1, list(keys))["items"]

    def clean(self, item):
        return domain.clean_direction(item)

    def key(self, row):
        return str(row["number"])

    def rows(self, tx, keys):
        result = tx.execute(
            f"SELECT {', '.join(('number',) + self.fields)} FROM {S}.directions "
            "WHERE number = ANY(CAST(:k AS text[]))", {"k": list(keys)}).mappings()
        return {self.key(r): dict(r) for r in result}

    def repair(self, tx, diff):
        # the group's enrolled count is not moved: see the module docstring
        current = storage.lock_direction(tx, diff.key)
        if not _unchanged(current, diff):
            return "skipped"
        if diff.kind == "extra":
            tx.execute(f"DELETE FROM {S}.directions WHERE number = :k", {"k": diff.key})
        elif current is None:
            if not storage.insert_direction(tx, diff.source):
                return "skipped"
        else:
            storage.update_direction(tx, diff.source)
        return "repaired"


class ReleaseModel(Model):
    """The 05-20 protocol: one row per place_released event, keyed (place, revision then)."""

    name, table, key_sql = "releases", "releases", "place_id, release_revision"
    fields = ("release_id", "organization_id", "group_id", "birth_year", "language",
              "group_type", "released_at", "priority_starts_at", "priority_ends_at")
    normalize = {"release_id": _json, "organization_id": _int, "group_id": _int,
                 "birth_year": _int, "released_at": _time, "priority_starts_at": _time,
                 "priority_ends_at": _time}

    def page(self, rpc, after, limit):
        page = rpc.allocation.export_releases(after or 0, limit)
        return page["items"], page["next"]

    def by_keys(self, rpc, keys):
        wanted = set(keys)
        places = sorted({k[0] for k in keys})
        items = rpc.allocation.export_releases(0, 1, places)["items"]
        return [i for i in items if self.key(i) in wanted]

    def clean(self, item):
        return domain.clean_place(item)

    def key(self, row):
        revision = row["release_revision"] if "release_revision" in row else row["revision"]
        return (str(_json(row["place_id"])), int(revision))

    def rows(self, tx, keys):
        wanted = set(keys)
        result = tx.execute(
            f"SELECT {', '.join(('place_id', 'release_revision', 'revision') + self.fields)} "
            f"FROM {S}.releases WHERE place_id = ANY(CAST(:k AS jsonb[]))",
            {"k": [json.dumps(p) for p in sorted({k[0] for k in keys})]}).mappings()
        rows = {self.key(r): dict(r) for r in result}
        return {k: v for k, v in rows.items() if k in wanted}

    def _lock(self, tx: Tx, key: tuple[str, int]) -> dict[str, Any] | None:
        row = tx.execute(
            f"SELECT id, revision FROM {S}.releases WHERE place_id = CAST(:p AS jsonb) "
            "AND release_revision = :r FOR UPDATE",
            {"p": json.dumps(key[0]), "r": key[1]}).mappings().first()
        return dict(row) if row else None

    def repair(self, tx, diff):
        current = self._lock(tx, diff.key)
        if diff.kind == "missing" and current is not None:
            return "skipped"  # the event arrived meanwhile
        if diff.kind != "missing" and (current is None
                                       or current["revision"] != diff.registry_revision):
            return "skipped"
        if current is not None:
            tx.execute(f"DELETE FROM {S}.releases WHERE id = :id", {"id": current["id"]})
        if diff.kind != "extra":
            # the protocol row as the place_released handler writes it
            storage.insert_release(tx, diff.source)
        return "repaired"


MODEL_CLASSES: dict[str, type[Model]] = {
    "queue": QueueModel, "places": PlaceModel, "directions": DirectionModel,
    "releases": ReleaseModel,
}


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Report:
    differences: list[Difference]
    counts: dict[str, int]
    repaired: int = 0
    skipped: int = 0
    compared: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.differences)

    def summary(self) -> str:
        per = ", ".join(f"{m} {n}" for m, n in self.counts.items())
        return f"{self.total} differences ({per})"


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check(model: Model, rpc, db: DatabaseAccess, keys: list[Hashable],
           page_size: int) -> list[Difference]:
    """Compare these keys afresh: the registry first, then the source (which is never behind
    what the registry has seen)."""
    diffs = []
    for chunk in _chunks(keys, page_size):
        with db.read() as tx:
            rows = model.rows(tx, chunk)
        src = {model.key(i): model.clean(i) for i in model.by_keys(rpc, chunk)}
        diffs.extend(d for d in (model.compare(k, rows.get(k), src.get(k)) for k in chunk) if d)
    return diffs


def scan(model: Model, rpc, db: DatabaseAccess,
         page_size: int = DEFAULT_PAGE_SIZE) -> tuple[list[Difference], int]:
    """Every difference of one read model as seen in one pass; and the rows compared."""
    seen: set[Hashable] = set()
    diffs: list[Difference] = []
    after = None
    while True:
        items, after = model.page(rpc, after, page_size)
        src = {model.key(i): model.clean(i) for i in items}
        seen.update(src)
        with db.read() as tx:
            rows = model.rows(tx, list(src))
        diffs.extend(d for d in (model.compare(k, rows.get(k), s) for k, s in src.items()) if d)
        if after is None:
            break
    with db.read() as tx:
        extra = [k for k in model.all_keys(tx) if k not in seen]
    # a source row made after its page was read is not extra: ask the source about each
    diffs.extend(_check(model, rpc, db, extra, page_size))
    return diffs, len(seen) + len(extra)


def settle_differences(rpc, db: DatabaseAccess, diffs: list[Difference], seconds: float,
                       page_size: int = DEFAULT_PAGE_SIZE) -> list[Difference]:
    """Look at the differences again until they are gone or ``seconds`` have passed: the
    ones caused by events still in flight go away."""
    deadline = time.monotonic() + seconds
    while diffs and time.monotonic() < deadline:
        time.sleep(min(RECHECK_SECONDS, max(deadline - time.monotonic(), 0)))
        again: list[Difference] = []
        for name in MODELS:
            keys = [d.key for d in diffs if d.model == name]
            if keys:
                again.extend(_check(MODEL_CLASSES[name](), rpc, db, keys, page_size))
        diffs = again
    return diffs


def repair(db: DatabaseAccess, diffs: list[Difference], batch: int = 200) -> tuple[int, int]:
    """Write the source's snapshots over the differences; (repaired, skipped). Missing queue
    entries (a whole read model to fill, e.g. after ``kezek demo load``) are inserted
    5,000 to a statement; an entry an event inserted meanwhile is newer and is skipped."""
    repaired = skipped = 0
    missing, others = [], []
    for d in diffs:
        (missing if d.model == "queue" and d.kind == "missing" else others).append(d)
    for chunk in _chunks(missing, 5000):
        with db.transaction() as tx:
            inserted = storage.insert_entries(tx, [d.source for d in chunk])
        repaired += inserted
        skipped += len(chunk) - inserted
    for chunk in _chunks(others, batch):
        with db.transaction() as tx:
            for diff in chunk:
                outcome = MODEL_CLASSES[diff.model]().repair(tx, diff)
                repaired += outcome == "repaired"
                skipped += outcome == "skipped"
    return repaired, skipped


def reconcile(config: dict[str, Any], repair_rows: bool = False,
              models: Iterable[str] | None = None, page_size: int = DEFAULT_PAGE_SIZE,
              settle: float = DEFAULT_SETTLE_SECONDS, rpc=None,
              out: Callable[[str], None] | None = print) -> Report:
    """Compare (and with ``repair_rows`` repair) the chosen read models; print a line per
    difference and the summary ``N differences (...)`` through ``out``."""
    names = list(models or MODELS)
    unknown = set(names) - set(MODELS)
    if unknown:
        raise BadInput(f"unknown read model(s) {', '.join(sorted(unknown))}; known: "
                       f"{', '.join(MODELS)}", field="only")
    db = DatabaseAccess(get_engine(config["DB_URL"]), S)
    if rpc is None:
        from nameko.standalone.rpc import ClusterRpcProxy

        try:
            with ClusterRpcProxy(config, timeout=120) as cluster:
                return reconcile(config, repair_rows, names, page_size, settle, cluster, out)
        except (OSError, KombuOperationalError) as exc:
            raise DomainError(f"the broker cannot be reached: {exc}",
                              code="BROKER_UNAVAILABLE") from exc
    found: list[Difference] = []
    compared: dict[str, int] = {}
    try:
        for name in names:
            diffs, compared[name] = scan(MODEL_CLASSES[name](), rpc, db, page_size)
            found.extend(diffs)
        found = settle_differences(rpc, db, found, settle, page_size)
    except UnknownService as exc:
        service = getattr(exc, "_service_name", exc)
        raise DomainError(f"the {service} service is not running: reconcile reads its exports "
                          "over RPC", code="SOURCE_UNAVAILABLE") from exc
    except (OSError, KombuOperationalError) as exc:
        raise DomainError(f"the broker cannot be reached: {exc}",
                          code="BROKER_UNAVAILABLE") from exc
    report = Report(found, {n: sum(d.model == n for d in found) for n in names}, compared=compared)
    if out:
        for diff in found:
            out(diff.line())
        out(report.summary())
    if repair_rows and report.differences:
        report.repaired, report.skipped = repair(db, report.differences)
        if out:
            out(f"repaired {report.repaired}, skipped {report.skipped} (changed by an event "
                "meanwhile: run reconcile again)" if report.skipped
                else f"repaired {report.repaired}")
    return report
