"""SQL of the applications schema. Functions take a services.common.db.Tx (or a connection for
seeding) and plain values; they return rows or plain dicts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from services.applications.domain import NewApplication

CATEGORIES_FILE = Path(__file__).with_name("benefit_categories.yaml")
S = "applications"


def iso(value: Any) -> str | None:
    """Times as ISO 8601 in UTC with offset; dates as YYYY-MM-DD."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# -- reference data -------------------------------------------------------------------------------

def read_categories_file(path: Path = CATEGORIES_FILE) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def seed_benefit_categories(conn, path: Path = CATEGORIES_FILE) -> int:
    """Upsert the categories of the data file (migrations call this)."""
    rows = read_categories_file(path)
    for position, c in enumerate(rows, start=1):
        conn.execute(
            text(f"""
                INSERT INTO {S}.benefit_categories (code, tier, name_kk, name_ru, position)
                VALUES (:code, :tier, :kk, :ru, :pos)
                ON CONFLICT (code) DO UPDATE SET tier = EXCLUDED.tier, name_kk = EXCLUDED.name_kk,
                    name_ru = EXCLUDED.name_ru, position = EXCLUDED.position"""),
            {"code": c["code"], "tier": c["tier"], "kk": c["name"]["kk"], "ru": c["name"]["ru"],
             "pos": position},
        )
    return len(rows)


def benefit_categories(tx) -> list[dict[str, Any]]:
    rows = tx.execute(
        f"SELECT code, tier, name_kk, name_ru FROM {S}.benefit_categories ORDER BY position, code"
    ).all()
    return [{"code": r.code, "tier": r.tier, "name": {"kk": r.name_kk, "ru": r.name_ru}}
            for r in rows]


# -- clock and locking ----------------------------------------------------------------------------

def local_today(tx, tz: str) -> dt.date:
    """Today in the portal's time zone, by the database clock."""
    return tx.execute("SELECT (clock_timestamp() AT TIME ZONE :tz)::date", {"tz": tz}).scalar()


def lock_writes(tx) -> None:
    """Take the journal's append lock now rather than at the journal insert.

    The journal trigger serialises appenders with this same advisory lock (key
    hashtext('applications.journal')) until commit. Taking it first in every writing
    transaction gives all of them one lock order (no deadlock between a filing waiting on the
    child's unique index and a withdrawal waiting on the journal), and makes the number
    sequence and the filing clock advance together: lexical number order = filing order.
    Taken once per transaction: a batch of events (services.common.db.each) shares one.
    """
    if getattr(tx, "writes_locked", False):
        return
    tx.execute(f"SELECT pg_advisory_xact_lock(hashtext('{S}.journal'))")
    tx.writes_locked = True


# -- idempotency ----------------------------------------------------------------------------------

def idempotency_get(tx, actor_id: str, key: str):
    return tx.execute(
        f"SELECT request_hash, result FROM {S}.idempotency WHERE actor_id = :a AND key = :k",
        {"a": actor_id, "k": key},
    ).first()


def idempotency_claim(tx, actor_id: str, key: str, request_hash: str) -> bool:
    """True if this transaction owns the key (waits for a concurrent owner to finish)."""
    return tx.execute(
        f"INSERT INTO {S}.idempotency (actor_id, key, request_hash) VALUES (:a, :k, :h) "
        "ON CONFLICT DO NOTHING RETURNING 1",
        {"a": actor_id, "k": key, "h": request_hash},
    ).first() is not None


def idempotency_store(tx, actor_id: str, key: str, result: dict[str, Any]) -> None:
    tx.execute(
        f"UPDATE {S}.idempotency SET result = CAST(:r AS jsonb) WHERE actor_id = :a AND key = :k",
        {"a": actor_id, "k": key, "r": json.dumps(result)},
    )


# -- filing ---------------------------------------------------------------------------------------

def active_application(tx, child_iin: str, queue_type: str) -> str | None:
    return tx.execute(
        f"SELECT number FROM {S}.applications WHERE child_iin = :c AND queue_type = :q "
        "AND status NOT IN ('withdrawn', 'provided') ORDER BY number LIMIT 1",
        {"c": child_iin, "q": queue_type},
    ).scalar()


def upsert_applicant(tx, applicant_id: str, cmd: NewApplication) -> None:
    tx.execute(
        f"""INSERT INTO {S}.applicants (id, iin, full_name, phone) VALUES (:id, :iin, :n, :p)
            ON CONFLICT (id) DO UPDATE SET iin = EXCLUDED.iin, full_name = EXCLUDED.full_name,
                phone = EXCLUDED.phone, updated_at = clock_timestamp()""",
        {"id": applicant_id, "iin": cmd.applicant_iin, "n": cmd.applicant_name,
         "p": cmd.applicant_phone},
    )


def upsert_child(tx, cmd: NewApplication) -> None:
    tx.execute(
        f"""INSERT INTO {S}.children (iin, full_name, birth_date) VALUES (:iin, :n, :b)
            ON CONFLICT (iin) DO UPDATE SET full_name = EXCLUDED.full_name,
                updated_at = clock_timestamp()""",
        {"iin": cmd.child_iin, "n": cmd.child_name, "b": cmd.child_birth_date},
    )


def next_number(tx) -> tuple[str, dt.datetime]:
    """A new application number and the filing moment (database clock)."""
    row = tx.execute(
        f"SELECT nextval('{S}.application_number_seq') AS n, clock_timestamp() AS at"
    ).one()
    return f"A{row.n:09d}", row.at


def insert_application(tx, number: str, applicant_id: str, cmd: NewApplication,
                       filed_at: dt.datetime) -> None:
    tx.execute(
        f"""INSERT INTO {S}.applications
              (number, applicant_id, child_iin, queue_type, language, district, birth_year,
               queue_name, desired_start, current_organization_id, current_group_id, filed_at,
               status, status_changed_at)
            VALUES (:number, :applicant_id, :child_iin, :queue_type, :language, :district,
                    :birth_year, :queue_name, :desired_start, :cur_org, :cur_group, :filed_at,
                    'queued', :filed_at)""",
        {"number": number, "applicant_id": applicant_id, "child_iin": cmd.child_iin,
         "queue_type": cmd.queue_type, "language": cmd.language, "district": cmd.district,
         "birth_year": cmd.birth_year, "queue_name": cmd.queue_name,
         "desired_start": cmd.desired_start, "cur_org": cmd.current_organization_id,
         "cur_group": cmd.current_group_id, "filed_at": filed_at},
    )
    tx.execute(
        f"INSERT INTO {S}.preferences (application_number, position, organization_id) "
        "SELECT :number, p.ord, p.org FROM unnest(CAST(:orgs AS int[])) WITH ORDINALITY "
        "AS p(org, ord)",
        {"number": number, "orgs": list(cmd.preferred_organizations)},
    )
    if cmd.benefit_category is not None:
        tx.execute(
            f"INSERT INTO {S}.benefit_claims (application_number, category, document) "
            "VALUES (:number, :c, :d)",
            {"number": number, "c": cmd.benefit_category, "d": cmd.benefit_document},
        )


# -- reading applications -------------------------------------------------------------------------

_VIEW = f"""
SELECT a.number, a.applicant_id, a.child_iin, a.queue_type, a.language, a.district,
       a.birth_year, a.queue_name, a.desired_start, a.current_organization_id,
       a.current_group_id, a.filed_at, a.status, a.status_changed_at, a.entry_revision,
       a.stop_list, a.withdrawn_at, a.imported_at, a.import_source, a.import_ref,
       ap.iin AS applicant_iin, ap.full_name AS applicant_name, ap.phone AS applicant_phone,
       c.full_name AS child_name, c.birth_date AS child_birth_date,
       b.category AS benefit_category, b.document AS benefit_document,
       b.status AS benefit_status, b.tier AS benefit_tier, b.note AS benefit_note,
       b.verified_at AS benefit_verified_at, bc.tier AS category_tier,
       bc.name_kk AS category_kk, bc.name_ru AS category_ru,
       (SELECT array_agg(p.organization_id ORDER BY p.position) FROM {S}.preferences p
         WHERE p.application_number = a.number) AS preferred_organizations,
       d.number AS direction_number, d.status AS direction_status, d.type AS direction_type,
       d.organization_id AS direction_organization_id, d.issued_at AS direction_issued_at,
       d.expires_at AS direction_expires_at, d.closed_at AS direction_closed_at,
       d.reason AS direction_reason
FROM {S}.applications a
JOIN {S}.applicants ap ON ap.id = a.applicant_id
JOIN {S}.children c ON c.iin = a.child_iin
LEFT JOIN {S}.benefit_claims b ON b.application_number = a.number
LEFT JOIN {S}.benefit_categories bc ON bc.code = b.category
LEFT JOIN LATERAL (
    SELECT * FROM {S}.directions dd WHERE dd.application_number = a.number
    ORDER BY dd.issued_at DESC NULLS LAST, dd.number DESC LIMIT 1) d ON true
"""


def get_application(tx, number: str, for_update: bool = False):
    sql = _VIEW + " WHERE a.number = :n" + (" FOR UPDATE OF a" if for_update else "")
    return tx.execute(sql, {"n": number}).mappings().first()


def application_to_change(tx, number: str, batch_numbers: list[str] | None = None):
    """get_application(for_update=True); in a batch, the applications of ``batch_numbers``
    are locked and read in one statement (Tx.take_prefetched)."""
    row = tx.take_prefetched("applications", number, batch_numbers, applications_for_update)
    return row if row is not None else get_application(tx, number, for_update=True)


def applications_of(tx, applicant_id: str) -> list:
    return tx.execute(_VIEW + " WHERE a.applicant_id = :a ORDER BY a.number",
                      {"a": applicant_id}).mappings().all()


def application_dict(row) -> dict[str, Any]:
    """The application as services return it (queue_number is filled in by the caller)."""
    benefit = None
    if row["benefit_category"] is not None:
        benefit = {
            "category": row["benefit_category"],
            "name": {"kk": row["category_kk"], "ru": row["category_ru"]},
            "tier": row["category_tier"],
            "document": row["benefit_document"],
            "status": row["benefit_status"],
            "verified": row["benefit_status"] == "approved",
            "verified_at": iso(row["benefit_verified_at"]),
            "note": row["benefit_note"],
        }
    direction = None
    if row["direction_number"] is not None:
        direction = {
            "number": row["direction_number"],
            "status": row["direction_status"],
            "type": row["direction_type"],
            "organization_id": row["direction_organization_id"],
            "issued_at": iso(row["direction_issued_at"]),
            "expires_at": iso(row["direction_expires_at"]),
            "closed_at": iso(row["direction_closed_at"]),
            "reason": row["direction_reason"],
        }
    return {
        "application_number": row["number"],
        "status": row["status"],
        "queue_name": row["queue_name"],
        "queue_number": None,
        "filed_at": iso(row["filed_at"]),
        "queue_type": row["queue_type"],
        "language": row["language"],
        "district": row["district"],
        "birth_year": row["birth_year"],
        "desired_start": iso(row["desired_start"]),
        "preferred_organizations": list(row["preferred_organizations"] or []),
        "applicant": {"iin": row["applicant_iin"], "full_name": row["applicant_name"],
                      "phone": row["applicant_phone"]},
        "child": {"iin": row["child_iin"], "full_name": row["child_name"],
                  "birth_date": iso(row["child_birth_date"])},
        "benefit": benefit,
        "current_organization_id": row["current_organization_id"],
        "current_group_id": row["current_group_id"],
        "stop_list": row["stop_list"],
        "direction": direction,
        "status_changed_at": iso(row["status_changed_at"]),
        "withdrawn_at": iso(row["withdrawn_at"]),
        # imported from the previous portal: filed_at is that system's moment, kept as data
        "imported": row["imported_at"] is not None,
        "imported_at": iso(row["imported_at"]),
        "import_source": row["import_source"],
    }


def filed_event_data(row) -> dict[str, Any]:
    """The applications.application_filed payload (also what queue.enqueue takes)."""
    benefit = None
    if row["benefit_category"] is not None:
        # as filed: a claim counts only once an officer verifies it (benefit_verified)
        benefit = {"category": row["benefit_category"], "tier": row["category_tier"],
                   "verified": False}
    return {
        "application_number": row["number"],
        "applicant_id": row["applicant_id"],
        "applicant_name": row["applicant_name"],
        "child_name": row["child_name"],
        "child_birth_date": iso(row["child_birth_date"]),
        "birth_year": row["birth_year"],
        "queue_type": row["queue_type"],
        "language": row["language"],
        "district": row["district"],
        "preferred_organizations": list(row["preferred_organizations"] or []),
        "desired_start": iso(row["desired_start"]),
        "filed_at": iso(row["filed_at"]),
        "benefit": benefit,
        "current_organization_id": row["current_organization_id"],
        "current_group_id": row["current_group_id"],
    }


def history(tx, number: str) -> list[dict[str, Any]]:
    rows = tx.execute(
        f"SELECT seq, at, kind, data FROM {S}.journal WHERE stream = :s ORDER BY seq",
        {"s": stream(number)},
    ).all()
    return [{"at": iso(r.at), "kind": r.kind, "data": r.data} for r in rows]


def stream(number: str) -> str:
    return f"application:{number}"


# -- changes --------------------------------------------------------------------------------------

def set_status(tx, number: str, status: str) -> dt.datetime:
    return tx.execute(
        f"""UPDATE {S}.applications SET status = :s, status_changed_at = clock_timestamp(),
                withdrawn_at = CASE WHEN :s = 'withdrawn' THEN clock_timestamp()
                                    ELSE withdrawn_at END
            WHERE number = :n RETURNING status_changed_at""",
        {"s": status, "n": number},
    ).scalar()


def set_entry_snapshot(tx, number: str, revision: int, queue_name: str | None,
                       stop_list: Any) -> None:
    tx.execute(
        f"""UPDATE {S}.applications SET entry_revision = :r,
                queue_name = COALESCE(:q, queue_name), stop_list = CAST(:sl AS jsonb)
            WHERE number = :n""",
        {"r": revision, "q": queue_name, "sl": json.dumps(stop_list) if stop_list else None,
         "n": number},
    )


def verify_claim(tx, number: str, approved: bool, tier: str | None, note: str | None,
                 officer_id: str) -> dt.datetime:
    return tx.execute(
        f"""UPDATE {S}.benefit_claims SET status = :s, tier = :t, note = :note,
                verified_by = :by, verified_at = clock_timestamp()
            WHERE application_number = :n AND status = 'claimed' RETURNING verified_at""",
        {"s": "approved" if approved else "refused", "t": tier, "note": note, "by": officer_id,
         "n": number},
    ).scalar()


def get_direction(tx, number: str):
    return tx.execute(f"SELECT * FROM {S}.directions WHERE number = :n FOR UPDATE",
                      {"n": number}).mappings().first()


def upsert_direction(tx, data: dict[str, Any]) -> None:
    tx.execute(
        f"""INSERT INTO {S}.directions (number, application_number, revision, status, type,
                organization_id, group_id, issued_at, expires_at, closed_at, reason)
            VALUES (:number, :app, :rev, :status, :type, :org, :grp, :issued, :expires,
                    :closed, :reason)
            ON CONFLICT (number) DO UPDATE SET revision = EXCLUDED.revision,
                status = EXCLUDED.status, type = EXCLUDED.type,
                organization_id = EXCLUDED.organization_id, group_id = EXCLUDED.group_id,
                issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at,
                closed_at = EXCLUDED.closed_at, reason = EXCLUDED.reason,
                updated_at = clock_timestamp()""",
        {"number": str(data["number"]), "app": data["application_number"],
         "rev": int(data["revision"]), "status": data["status"], "type": data.get("type"),
         "org": data.get("organization_id"), "grp": data.get("group_id"),
         "issued": data.get("issued_at"), "expires": data.get("expires_at"),
         "closed": data.get("closed_at"), "reason": data.get("reason")},
    )


# -- feed -----------------------------------------------------------------------------------------

def feed_later(tx, applicant_id: str, number: str, kind: str, texts: dict[str, str],
               event_id: str | None = None) -> None:
    """add_feed, except in a batch's shared transaction: there the entries of all its events
    are written in one statement at its end, in the order they were made (as Tx.journal)."""
    if not tx.shared:
        add_feed(tx, applicant_id, number, kind, texts, event_id)
        return
    later = getattr(tx, "feed_later", None)
    if later is None:
        later = tx.feed_later = []
        tx.before_commit.append(lambda: _write_feed_later(tx))
    later.append((applicant_id, number, kind, texts, event_id))


def _write_feed_later(tx) -> None:
    feed, tx.feed_later = tx.feed_later, None
    add_feed_bulk(tx, [(a, n, k, t) for a, n, k, t, _ in feed], [e for *_, e in feed])


def add_feed(tx, applicant_id: str, number: str, kind: str, texts: dict[str, str],
             event_id: str | None = None) -> None:
    tx.execute(
        f"INSERT INTO {S}.feed (applicant_id, application_number, kind, text_kk, text_ru, "
        "event_id) VALUES (:a, :n, :k, :kk, :ru, :e)",
        {"a": applicant_id, "n": number, "k": kind, "kk": texts["kk"], "ru": texts["ru"],
         "e": event_id},
    )


def feed_page(tx, applicant_id: str, page: int, page_size: int) -> dict[str, Any]:
    total = tx.execute(f"SELECT count(*) FROM {S}.feed WHERE applicant_id = :a",
                       {"a": applicant_id}).scalar()
    rows = tx.execute(
        f"SELECT at, kind, application_number, text_kk, text_ru FROM {S}.feed "
        "WHERE applicant_id = :a ORDER BY at DESC, id DESC LIMIT :l OFFSET :o",
        {"a": applicant_id, "l": page_size, "o": (page - 1) * page_size},
    ).all()
    items = [{"at": iso(r.at), "kind": r.kind, "application_number": r.application_number,
              "text": {"kk": r.text_kk, "ru": r.text_ru}} for r in rows]
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}


# -- bulk paths (many applications per statement; see commands.file_applications_bulk) -----------
# Rows travel as one JSON array read with jsonb_to_recordset (services.common.bulk.rows_json).

def _recordset(columns: str) -> str:
    return (f"ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({columns})) "
            "WITH ORDINALITY")


def active_applications_bulk(tx, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(child IIN, queue type) -> the active application number, for many children at once."""
    from services.common.bulk import rows_json

    if not keys:
        return {}
    rows = tx.execute(
        f"""SELECT a.child_iin, a.queue_type, min(a.number) AS number
            FROM {_recordset("c text, q text")} AS k(c, q, i)
            JOIN {S}.applications a ON a.child_iin = k.c AND a.queue_type = k.q
            WHERE a.status NOT IN ('withdrawn', 'provided')
            GROUP BY a.child_iin, a.queue_type""",
        {"rows": rows_json({"c": c, "q": q} for c, q in keys)},
    ).all()
    return {(r.child_iin, r.queue_type): r.number for r in rows}


def imported_refs(tx, source: str, refs: list[str]) -> dict[str, str]:
    """ref -> application number of the ones already imported from ``source``."""
    if not refs:
        return {}
    rows = tx.execute(
        f"SELECT import_ref, number FROM {S}.applications WHERE import_source = :s "
        "AND import_ref IN (SELECT jsonb_array_elements_text(CAST(:r AS jsonb)))",
        {"s": source, "r": json.dumps(refs)},
    ).all()
    return {r.import_ref: r.number for r in rows}


def next_numbers(tx, count: int) -> list[tuple[str, dt.datetime]]:
    """``count`` new application numbers with the database clock at each, in order."""
    rows = tx.execute(
        f"SELECT nextval('{S}.application_number_seq') AS n, clock_timestamp() AS at "
        "FROM generate_series(1, :c)",
        {"c": count},
    ).all()
    return [(f"A{r.n:09d}", r.at) for r in sorted(rows, key=lambda r: r.n)]


def upsert_applicants_bulk(tx, rows: list[tuple[str, str, str, str]]) -> None:
    """(id, iin, full_name, phone); the last row of an id wins, as filings one by one would."""
    from services.common.bulk import rows_json

    last = {r[0]: r for r in rows}
    if not last:
        return
    tx.execute(
        f"""INSERT INTO {S}.applicants (id, iin, full_name, phone)
            SELECT r.id, r.iin, r.n, r.p FROM {_recordset("id text, iin text, n text, p text")}
                AS r(id, iin, n, p, i) ORDER BY r.i
            ON CONFLICT (id) DO UPDATE SET iin = EXCLUDED.iin, full_name = EXCLUDED.full_name,
                phone = EXCLUDED.phone, updated_at = clock_timestamp()""",
        {"rows": rows_json({"id": a, "iin": b, "n": c, "p": d} for a, b, c, d in last.values())},
    )


def upsert_children_bulk(tx, rows: list[tuple[str, str, dt.date]]) -> None:
    """(iin, full_name, birth_date); like upsert_child, the name follows the latest filing."""
    from services.common.bulk import rows_json

    last = {r[0]: r for r in rows}
    if not last:
        return
    tx.execute(
        f"""INSERT INTO {S}.children (iin, full_name, birth_date)
            SELECT r.iin, r.n, r.b FROM {_recordset("iin text, n text, b date")}
                AS r(iin, n, b, i) ORDER BY r.i
            ON CONFLICT (iin) DO UPDATE SET full_name = EXCLUDED.full_name,
                updated_at = clock_timestamp()""",
        {"rows": rows_json({"iin": a, "n": b, "b": c} for a, b, c in last.values())},
    )


def insert_applications_bulk(tx, rows: list[dict[str, Any]]) -> None:
    """Applications with their preferences and benefit claims; each row is
    ``{"number", "applicant_id", "cmd": NewApplication, "filed_at", "import_source",
    "import_ref"}`` (the import fields None for a filing made here)."""
    from services.common.bulk import rows_json

    if not rows:
        return
    apps, prefs, claims = [], [], []
    for r in rows:
        cmd: NewApplication = r["cmd"]
        apps.append({
            "number": r["number"], "applicant_id": r["applicant_id"],
            "child_iin": cmd.child_iin, "queue_type": cmd.queue_type,
            "language": cmd.language, "district": cmd.district, "birth_year": cmd.birth_year,
            "queue_name": cmd.queue_name, "desired_start": cmd.desired_start,
            "cur_org": cmd.current_organization_id, "cur_group": cmd.current_group_id,
            "filed_at": r["filed_at"], "source": r.get("import_source"),
            "ref": r.get("import_ref")})
        for position, org in enumerate(cmd.preferred_organizations, start=1):
            prefs.append({"n": r["number"], "p": position, "o": org})
        if cmd.benefit_category is not None:
            claims.append({"n": r["number"], "c": cmd.benefit_category,
                           "d": cmd.benefit_document})
    columns = ("number text, applicant_id text, child_iin text, queue_type text, "
               "language text, district text, birth_year int, queue_name text, "
               "desired_start date, cur_org int, cur_group int, filed_at timestamptz, "
               "source text, ref text")
    tx.execute(
        f"""INSERT INTO {S}.applications
              (number, applicant_id, child_iin, queue_type, language, district, birth_year,
               queue_name, desired_start, current_organization_id, current_group_id, filed_at,
               status, status_changed_at, import_source, import_ref)
            SELECT r.number, r.applicant_id, r.child_iin, r.queue_type, r.language, r.district,
                   r.birth_year, r.queue_name, r.desired_start, r.cur_org, r.cur_group,
                   r.filed_at, 'queued', r.filed_at, r.source, r.ref
            FROM {_recordset(columns)} AS r(number, applicant_id, child_iin, queue_type,
                language, district, birth_year, queue_name, desired_start, cur_org, cur_group,
                filed_at, source, ref, i)
            ORDER BY r.i""",
        {"rows": rows_json(apps)},
    )
    if prefs:
        tx.execute(
            f"INSERT INTO {S}.preferences (application_number, position, organization_id) "
            f"SELECT r.n, r.p, r.o FROM {_recordset('n text, p smallint, o int')} "
            "AS r(n, p, o, i)",
            {"rows": rows_json(prefs)},
        )
    if claims:
        tx.execute(
            f"INSERT INTO {S}.benefit_claims (application_number, category, document) "
            f"SELECT r.n, r.c, r.d FROM {_recordset('n text, c text, d text')} "
            "AS r(n, c, d, i)",
            {"rows": rows_json(claims)},
        )


def imported_at_of(tx, numbers: list[str]) -> dict[str, dt.datetime]:
    """The import moments the database stamped on these applications."""
    rows = tx.execute(
        f"SELECT number, imported_at FROM {S}.applications "
        "WHERE number IN (SELECT jsonb_array_elements_text(CAST(:n AS jsonb)))",
        {"n": json.dumps(numbers)},
    ).all()
    return {r.number: r.imported_at for r in rows}


def add_feed_bulk(tx, rows: list[tuple[str, str, str, dict[str, str]]],
                  event_ids: list[str | None] | None = None) -> None:
    """(applicant_id, number, kind, texts) feed entries, in this order (with the event each
    comes from, if given)."""
    from services.common.bulk import rows_json

    if not rows:
        return
    events = event_ids or [None] * len(rows)
    tx.execute(
        f"INSERT INTO {S}.feed (applicant_id, application_number, kind, text_kk, text_ru, "
        "event_id) SELECT r.a, r.n, r.k, r.kk, r.ru, r.e FROM "
        f"{_recordset('a text, n text, k text, kk text, ru text, e uuid')} "
        "AS r(a, n, k, kk, ru, e, i) ORDER BY r.i",
        {"rows": rows_json({"a": a, "n": n, "k": k, "kk": t["kk"], "ru": t["ru"], "e": e}
                           for (a, n, k, t), e in zip(rows, events))},
    )


def applications_for_update(tx, numbers: list[str]) -> dict[str, Any]:
    """get_application(for_update=True) for many numbers: number -> row (locked), taken in
    number order like one-by-one reads."""
    rows = tx.execute(
        _VIEW + " WHERE a.number IN (SELECT jsonb_array_elements_text(CAST(:n AS jsonb))) "
        "ORDER BY a.number FOR UPDATE OF a",
        {"n": json.dumps(sorted(set(numbers)))},
    ).mappings().all()
    return {r["number"]: r for r in rows}


def verify_claims_bulk(tx, decisions: list[dict[str, Any]], officer_id: str
                       ) -> dict[str, dt.datetime]:
    """verify_claim for many ``{"number", "approved", "tier", "note"}``: number ->
    verified_at (each claim its own database time)."""
    from services.common.bulk import rows_json

    if not decisions:
        return {}
    rows = tx.execute(
        f"""UPDATE {S}.benefit_claims b SET status = r.s, tier = r.t, note = r.note,
                verified_by = :by, verified_at = clock_timestamp()
            FROM {_recordset("n text, s text, t text, note text")} AS r(n, s, t, note, i)
            WHERE b.application_number = r.n AND b.status = 'claimed'
            RETURNING b.application_number, b.verified_at""",
        {"rows": rows_json({"n": d["number"], "s": "approved" if d["approved"] else "refused",
                            "t": d["tier"], "note": d["note"]} for d in decisions),
         "by": officer_id},
    ).all()
    return {r.application_number: r.verified_at for r in rows}


def event_data_of(number: str, applicant_id: str, cmd: NewApplication, filed_at: dt.datetime,
                  tier: str | None) -> dict[str, Any]:
    """What :func:`filed_event_data` returns for this application, built without reading it
    back (the bulk paths; a test holds the two equal)."""
    benefit = None
    if cmd.benefit_category is not None:
        benefit = {"category": cmd.benefit_category, "tier": tier, "verified": False}
    return {
        "application_number": number,
        "applicant_id": applicant_id,
        "applicant_name": cmd.applicant_name,
        "child_name": cmd.child_name,
        "child_birth_date": iso(cmd.child_birth_date),
        "birth_year": cmd.birth_year,
        "queue_type": cmd.queue_type,
        "language": cmd.language,
        "district": cmd.district,
        "preferred_organizations": list(cmd.preferred_organizations),
        "desired_start": iso(cmd.desired_start),
        "filed_at": iso(filed_at),
        "benefit": benefit,
        "current_organization_id": cmd.current_organization_id,
        "current_group_id": cmd.current_group_id,
    }
