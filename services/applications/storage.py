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
    """
    tx.execute(f"SELECT pg_advisory_xact_lock(hashtext('{S}.journal'))")


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
       a.stop_list, a.withdrawn_at,
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
