"""Registry SQL that reads: the public registries, lookups and statistics.

Filters arrive validated by domain.parse_filters; every value is a bound parameter, and the
WHERE clauses are chosen from fixed text only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from services.common.db import DatabaseAccess, Tx
from services.registry import domain

S = "registry"


# -- when each read model last changed -----------------------------------------------------------

_MAX = {
    "queue": f"(SELECT max(republished_at) FROM {S}.queue_entries)",
    "vacancies": f"(SELECT max(republished_at) FROM {S}.places)",
    "releases": f"(SELECT max(republished_at) FROM {S}.releases)",
    "directions": f"(SELECT max(republished_at) FROM {S}.directions)",
    "organizations": f"(SELECT max(updated_at) FROM {S}.organizations)",
    "groups": f"(SELECT max(updated_at) FROM {S}.groups)",
}
_MODELS = {
    "queue": ("queue",),
    "vacancies": ("vacancies", "organizations"),
    "releases": ("releases",),
    "directions": ("directions", "organizations"),
    # 05-17 shows vacancies and the fill of groups
    "organizations": ("organizations", "groups", "vacancies"),
    "statistics": ("queue", "vacancies", "releases", "directions", "organizations", "groups"),
}


def republished_at(tx: Tx, model: str) -> dt.datetime | None:
    """The database time of the last change of a read model (max of indexed columns)."""
    parts = ", ".join(_MAX[m] for m in _MODELS[model])
    return tx.execute(f"SELECT GREATEST({parts})").scalar()


# -- organisations -------------------------------------------------------------------------------


def _vacancy_counts(tx: Tx, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = tx.execute(
        f"""SELECT organization_id, count(*) AS n FROM {S}.places
            WHERE listed AND organization_id = ANY(CAST(:ids AS bigint[]))
            GROUP BY organization_id""",
        {"ids": ids},
    ).all()
    return {int(r.organization_id): int(r.n) for r in rows}


def _groups(tx: Tx, ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = tx.execute(
        f"""SELECT * FROM {S}.groups WHERE organization_id = ANY(CAST(:ids AS bigint[]))
            ORDER BY organization_id, id""",
        {"ids": ids},
    ).mappings().all()
    for r in rows:
        out[int(r["organization_id"])].append(dict(r))
    return out


def organizations_by_id(tx: Tx, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Organisation views (with groups and vacancies) in three statements."""
    if not ids:
        return {}
    rows = tx.execute(
        f"SELECT * FROM {S}.organizations WHERE id = ANY(CAST(:ids AS bigint[]))", {"ids": ids}
    ).mappings().all()
    found = [int(r["id"]) for r in rows]
    groups = _groups(tx, found)
    vacancies = _vacancy_counts(tx, found)
    return {int(r["id"]): domain.organization_view(r, groups[int(r["id"])],
                                                   vacancies.get(int(r["id"]), 0))
            for r in rows}


def organization(tx: Tx, organization_id: int) -> dict[str, Any] | None:
    return organizations_by_id(tx, [organization_id]).get(organization_id)


def group(tx: Tx, group_id: int) -> dict[str, Any] | None:
    row = tx.execute(
        f"""SELECT g.*, o.name AS organization_name, o.district, o.ownership, o.address
            FROM {S}.groups g JOIN {S}.organizations o ON o.id = g.organization_id
            WHERE g.id = :id""",
        {"id": group_id},
    ).mappings().first()
    if row is None:
        return None
    out = domain.group_view(row)
    out.update({k: row[k] for k in ("organization_id", "organization_name", "district",
                                    "ownership", "address")})
    return out


def list_organizations(tx: Tx, f: Mapping[str, Any], limit: int, offset: int
                       ) -> tuple[list[dict[str, Any]], int]:
    where, p = ["TRUE"], {}
    if "organization_id" in f:
        where.append("o.id = :organization_id")
    for key in ("district", "ownership", "kind"):
        if key in f:
            where.append(f"o.{key} = :{key}")
    group_conds = []
    if "birth_year" in f:
        group_conds.append("g.birth_year = :birth_year")
    if "language" in f:
        group_conds.append("g.language = :language")
    if "group_type" in f:
        group_conds.append("g.group_type = :group_type")
    if "queue_type" in f:
        group_conds.append("g.group_type = :fit_type")
        p["fit_type"] = domain.fitting_group_type(f["queue_type"])
    if group_conds:
        where.append(f"EXISTS (SELECT 1 FROM {S}.groups g WHERE g.organization_id = o.id AND "
                     + " AND ".join(group_conds) + ")")
    elif "language" in f:
        where.append(":language = ANY(o.languages)")
    if "has_vacancies" in f:
        where.append(("" if f["has_vacancies"] else "NOT ")
                     + f"EXISTS (SELECT 1 FROM {S}.places pl WHERE pl.listed "
                       "AND pl.organization_id = o.id)")
    p.update({k: v for k, v in f.items() if k != "queue_type"})
    cond = " AND ".join(where)
    total = tx.execute(f"SELECT count(*) FROM {S}.organizations o WHERE {cond}", p).scalar()
    ids = [int(i) for i in tx.execute(
        f"SELECT o.id FROM {S}.organizations o WHERE {cond} ORDER BY o.name, o.id "
        "LIMIT :limit OFFSET :offset", {**p, "limit": limit, "offset": offset}).scalars()]
    views = organizations_by_id(tx, ids)
    return [views[i] for i in ids], int(total)


def districts(tx: Tx) -> list[dict[str, str]]:
    rows = tx.execute(
        f"""SELECT name FROM {S}.districts
            UNION SELECT DISTINCT district FROM {S}.organizations
            ORDER BY 1"""
    ).scalars()
    return [{"name": n} for n in rows]


def fitting_organizations(tx: Tx, ids: list[int], birth_year: int, language: str,
                          group_type: str) -> tuple[set[int], set[int]]:
    """(ids that exist, ids that have a fitting group) in one statement."""
    if not ids:
        return set(), set()
    rows = tx.execute(
        f"""SELECT o.id, EXISTS (SELECT 1 FROM {S}.groups g WHERE g.organization_id = o.id
                    AND g.birth_year = :y AND g.language = :l AND g.group_type = :t) AS fits
            FROM {S}.organizations o WHERE o.id = ANY(CAST(:ids AS bigint[]))""",
        {"ids": ids, "y": birth_year, "l": language, "t": group_type},
    ).all()
    return {int(r.id) for r in rows}, {int(r.id) for r in rows if r.fits}


# -- queue ---------------------------------------------------------------------------------------

_ORDER = "queue_name, in_queue DESC, sort_key"


def _queue_where(f: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    # status <> 'withdrawn' always: it is the predicate of the partial indexes
    where, p = ["status <> 'withdrawn'"], dict(f)
    for key in ("district", "queue_type", "birth_year", "language", "queue_name", "status"):
        if key in f:
            where.append(f"{key} = :{key}")
    if "benefit_tier" in f:
        where.append("benefit_tier = :benefit_tier")
    if "organization_id" in f:
        where.append("preferred_organizations @> ARRAY[CAST(:organization_id AS bigint)]")
    if "from" in f:
        where.append("filed_at >= :from")
    if "to" in f:
        where.append("filed_at < :to")
    return " AND ".join(where), p


# filters a total can be summed for from registry.queue_counts (its key columns)
_COUNTED = frozenset(("district", "queue_type", "birth_year", "language", "queue_name", "status",
                      "benefit_tier"))
# what a registry row shows (domain.queue_row), and what orders it
_ROW = ("application_number", "queue_name", "in_queue", "sort_key", "status", "benefit_tier",
        "queue_type", "filed_at", "stop_list", "applicant_name", "child_name")


def _total_sql(f: Mapping[str, Any], cond: str) -> str:
    """The number of listed entries the filters match: a sum over the per-queue counts (kept
    by triggers in the same transactions as the entries) when every filter is one of their
    columns, else a count of the entries."""
    if _COUNTED.issuperset(f):
        return f"SELECT COALESCE(sum(n), 0) FROM {S}.queue_counts WHERE {cond}"
    return f"SELECT count(*) FROM {S}.queue_entries WHERE {cond}"


def list_queue(db: DatabaseAccess, f: Mapping[str, Any], limit: int, offset: int
               ) -> tuple[list[dict[str, Any]], int, dt.datetime | None]:
    """A page in queue order with live queue numbers, the total and when the read model last
    changed, in one statement (one round trip, one snapshot).

    The page's keys come from an index alone (no table rows read for the rows skipped by the
    offset), then its rows. Per queue on the page: one count of the in-queue entries before
    its first in-queue row, then row_number() over the in-queue entries from that row to its
    last one. The cost is the page's span of the queue, not the queue numbers themselves (page
    900 of a 50,000-child queue is as cheap as page 1, apart from one index-only count).
    """
    cond, p = _queue_where(f)
    columns = ", ".join(f"e.{c}" for c in _ROW)
    shown = ", ".join(f"page.{c}" for c in _ROW if c not in ("in_queue", "sort_key"))
    rows = db.rows(
        f"""WITH keys AS MATERIALIZED (
                SELECT queue_name, in_queue, sort_key FROM {S}.queue_entries WHERE {cond}
                ORDER BY {_ORDER} LIMIT :limit OFFSET :offset
            ), page AS MATERIALIZED (
                SELECT {columns} FROM keys k JOIN {S}.queue_entries e
                  ON e.queue_name = k.queue_name AND e.in_queue = k.in_queue
                 AND e.sort_key = k.sort_key AND e.status <> 'withdrawn'
            ), spans AS MATERIALIZED (
                SELECT s.queue_name, s.lo, s.hi,
                       (SELECT count(*) FROM {S}.queue_entries b
                        WHERE b.queue_name = s.queue_name AND b.status <> 'withdrawn'
                          AND b.in_queue AND b.sort_key < s.lo) AS before
                FROM (SELECT queue_name, min(sort_key) AS lo, max(sort_key) AS hi
                      FROM page WHERE in_queue GROUP BY queue_name) s
            ), numbered AS MATERIALIZED (
                SELECT q.sort_key,
                       s.before + row_number() OVER (PARTITION BY q.queue_name
                                                     ORDER BY q.sort_key) AS queue_number
                FROM spans s JOIN {S}.queue_entries q
                  ON q.queue_name = s.queue_name AND q.status <> 'withdrawn' AND q.in_queue
                 AND q.sort_key BETWEEN s.lo AND s.hi
            )
            SELECT meta.total, meta.model_republished_at, {shown}, numbered.queue_number
            FROM (SELECT ({_total_sql(f, cond)}) AS total,
                         {_MAX["queue"]} AS model_republished_at) meta
            LEFT JOIN (page LEFT JOIN numbered
                       ON numbered.sort_key = page.sort_key AND page.in_queue) ON TRUE
            ORDER BY page.queue_name, page.in_queue DESC, page.sort_key""",
        {**p, "limit": limit, "offset": offset},
    )
    # one row even for an empty page: the total and the time, without a row of the page
    meta = rows[0]
    items = [r for r in rows if r["application_number"] is not None]
    return items, int(meta["total"]), meta["model_republished_at"]


def queue_entries(db: DatabaseAccess, application_numbers: list[str]
                  ) -> dict[str, dict[str, Any]]:
    """Each entry with its live queue number, and (``model_republished_at``) when the queue
    read model last changed: one statement, so one snapshot even outside a transaction.
    Number -> row; numbers not in the registry are left out."""
    rows = db.rows(
        f"""SELECT e.*, CASE WHEN e.in_queue THEN 1 + (
                    SELECT count(*) FROM {S}.queue_entries q
                    WHERE q.queue_name = e.queue_name AND q.status <> 'withdrawn'
                      AND q.in_queue AND q.sort_key < e.sort_key) END AS queue_number,
                   {_MAX["queue"]} AS model_republished_at
            FROM {S}.queue_entries e WHERE e.application_number = ANY(:a)""",
        {"a": list(application_numbers)},
    )
    return {row["application_number"]: row for row in rows}


# -- vacancies, releases, directions -------------------------------------------------------------


def list_vacancies(tx: Tx, f: Mapping[str, Any], limit: int, offset: int
                   ) -> tuple[list[dict[str, Any]], int]:
    where, p = ["p.listed"], dict(f)
    for key in ("organization_id", "birth_year", "language", "group_type"):
        if key in f:
            where.append(f"p.{key} = :{key}")
    if "queue_type" in f:
        where.append("p.group_type = :fit_type")
        p["fit_type"] = domain.fitting_group_type(f["queue_type"])
    for key in ("district", "ownership"):
        if key in f:
            where.append(f"o.{key} = :{key}")
    if "in_priority_period" in f:
        where.append("p.status = " + ("'priority'" if f["in_priority_period"] else "'vacancy'"))
    if "from" in f:
        where.append("COALESCE(p.priority_starts_at, p.released_at) >= :from")
    if "to" in f:
        where.append("COALESCE(p.priority_starts_at, p.released_at) < :to")
    cond = " AND ".join(where)
    base = f"FROM {S}.places p LEFT JOIN {S}.organizations o ON o.id = p.organization_id"
    total = tx.execute(f"SELECT count(*) {base} WHERE {cond}", p).scalar()
    rows = tx.execute(
        f"""SELECT p.*, o.name AS organization_name, o.ownership, o.address, o.district
            {base} WHERE {cond}
            ORDER BY p.priority_starts_at, p.place_id LIMIT :limit OFFSET :offset""",
        {**p, "limit": limit, "offset": offset},
    ).mappings().all()
    return [dict(r) for r in rows], int(total)


def list_releases(tx: Tx, f: Mapping[str, Any], limit: int, offset: int
                  ) -> tuple[list[dict[str, Any]], int]:
    where, p = ["TRUE"], dict(f)
    for key in ("organization_id", "birth_year", "language", "group_type", "district",
                "ownership"):
        if key in f:
            where.append(f"r.{key} = :{key}")
    if "from" in f:
        where.append("r.released_at >= :from")
    if "to" in f:
        where.append("r.released_at < :to")
    cond = " AND ".join(where)
    total = tx.execute(f"SELECT count(*) FROM {S}.releases r WHERE {cond}", p).scalar()
    rows = tx.execute(
        f"""SELECT r.* FROM {S}.releases r WHERE {cond}
            ORDER BY r.released_at DESC, r.id DESC LIMIT :limit OFFSET :offset""",
        {**p, "limit": limit, "offset": offset},
    ).mappings().all()
    return [dict(r) for r in rows], int(total)


def list_directions(tx: Tx, f: Mapping[str, Any], limit: int, offset: int
                    ) -> tuple[list[dict[str, Any]], int]:
    where, p = ["TRUE"], dict(f)
    for key in ("organization_id", "birth_year", "language", "type", "status"):
        if key in f:
            where.append(f"d.{key} = :{key}")
    for key in ("district", "ownership"):
        if key in f:
            where.append(f"o.{key} = :{key}")
    if "from" in f:
        where.append("d.issued_at >= :from")
    if "to" in f:
        where.append("d.issued_at < :to")
    cond = " AND ".join(where)
    base = f"FROM {S}.directions d LEFT JOIN {S}.organizations o ON o.id = d.organization_id"
    total = tx.execute(f"SELECT count(*) {base} WHERE {cond}", p).scalar()
    rows = tx.execute(
        f"""SELECT d.number, d.status, d.type, d.place_id, d.organization_id, d.child_name,
                   d.birth_year, d.language, d.issued_at, d.expires_at,
                   o.name AS organization_name
            {base} WHERE {cond}
            ORDER BY d.issued_at DESC, d.number DESC LIMIT :limit OFFSET :offset""",
        {**p, "limit": limit, "offset": offset},
    ).mappings().all()
    return [dict(r) for r in rows], int(total)


# -- statistics ----------------------------------------------------------------------------------


def _fact_where(f: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Filters apply to the facts that have that dimension (a direction has no queue type)."""
    where, p = [], dict(f)
    for key in ("district", "queue_type", "birth_year", "language", "organization_id"):
        if key in f:
            where.append(f"({key} IS NULL OR {key} = :{key})")
    if "from" in f:
        where.append("at >= :from")
    if "to" in f:
        where.append("at < :to")
    return (" AND ".join(where) or "TRUE"), p


def queue_sizes(tx: Tx, f: Mapping[str, Any]) -> list[dict[str, Any]]:
    where, p = ["in_queue", "status <> 'withdrawn'"], dict(f)
    for key in ("district", "queue_type", "birth_year", "language"):
        if key in f:
            where.append(f"{key} = :{key}")
    if "organization_id" in f:
        where.append("preferred_organizations @> ARRAY[CAST(:organization_id AS bigint)]")
    rows = tx.execute(
        f"""SELECT queue_name, district, queue_type, birth_year, count(*) AS n,
                   count(*) FILTER (WHERE benefit_tier <> 'none') AS with_benefit
            FROM {S}.queue_entries WHERE {' AND '.join(where)}
            GROUP BY queue_name, district, queue_type, birth_year ORDER BY queue_name""",
        p,
    ).mappings().all()
    return [dict(r) for r in rows]


def fact_counts(tx: Tx, f: Mapping[str, Any], kinds: tuple[str, ...], by: tuple[str, ...]
                ) -> list[dict[str, Any]]:
    """Counts of facts of ``kinds`` grouped by kind and the columns ``by``."""
    cond, p = _fact_where(f)
    cols = ", ".join(("kind",) + by)
    rows = tx.execute(
        f"""SELECT {cols}, count(*) AS n FROM {S}.stat_facts
            WHERE kind = ANY(CAST(:kinds AS text[])) AND {cond}
            GROUP BY {cols} ORDER BY {cols}""",
        {**p, "kinds": list(kinds)},
    ).mappings().all()
    return [dict(r) for r in rows]


def organization_names(tx: Tx, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = tx.execute(f"SELECT id, name FROM {S}.organizations "
                      "WHERE id = ANY(CAST(:ids AS bigint[]))", {"ids": ids}).all()
    return {int(r.id): r.name for r in rows}


def events_taken(tx: Tx, f: Mapping[str, Any], timezone: str) -> list[dict[str, Any]]:
    """Events taken in from the other services per day and handler (the inbox)."""
    where, p = [], {"tz": timezone}
    if "from" in f:
        where.append("handled_at >= :from")
        p["from"] = f["from"]
    if "to" in f:
        where.append("handled_at < :to")
        p["to"] = f["to"]
    rows = tx.execute(
        f"""SELECT (handled_at AT TIME ZONE :tz)::date AS day, handler, count(*) AS n
            FROM {S}.inbox WHERE {' AND '.join(where) or 'TRUE'}
            GROUP BY 1, 2 ORDER BY 1, 2""",
        p,
    ).mappings().all()
    return [dict(r) for r in rows]
