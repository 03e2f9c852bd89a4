"""The ``kezek`` command: migrate, demo data, accounts, dead letters, audit verification.

    kezek migrate                      apply every service's migrations, declare every queue
    kezek demo load --scale small      load a deterministic demo region
    kezek users add --role staff --phone +77010000001 --organization 3
    kezek dlq list | kezek dlq replay [--queue Q]
    kezek audit verify
"""

from __future__ import annotations

import argparse
import json
import sys

import services  # noqa: F401  (PSYCOPG_WAIT_FUNC before psycopg loads)
from services.common.config import load_config


def _db(config: dict, schema: str):
    from services.common.db import DatabaseAccess, get_engine

    return DatabaseAccess(get_engine(config["DB_URL"]), schema)


def cmd_migrate(config: dict, args) -> int:
    from services.common import topology
    from services.common.migrations import ensure_database, upgrade

    ensure_database(config["DB_URL"])
    upgrade(config["DB_URL"])
    queues = topology.declare_all(config)
    print(f"migrated; {queues} queues declared")
    return 0


def cmd_demo_load(config: dict, args) -> int:
    from services import demo

    summary = demo.load(config, scale=args.scale, seed=args.seed)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_users_add(config: dict, args) -> int:
    from services.gateway import accounts

    account = accounts.add_user(_db(config, "gateway"), role=args.role, phone=args.phone,
                                organization_id=args.organization)
    print(json.dumps(account, ensure_ascii=False, default=str))
    return 0


def cmd_dlq_list(config: dict, args) -> int:
    from services.common.amqp import take_dead_letters

    rows = []

    def look(body, headers):
        rows.append({"queue": _dead_letter_queue(headers),
                     "reason": headers.get("x-kezek-reason")
                     or (headers.get("x-death") or [{}])[0].get("reason"),
                     "body": body[:200]})
        return False

    take_dead_letters(config["AMQP_URI"], look)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False, default=str))
    print(f"{len(rows)} dead-lettered message(s)")
    return 0


def _dead_letter_queue(headers: dict) -> str | None:
    if headers.get("x-kezek-queue"):
        return headers["x-kezek-queue"]
    deaths = headers.get("x-death") or []
    return deaths[0].get("queue") if deaths else None


def cmd_dlq_replay(config: dict, args) -> int:
    """Publish dead letters back to the queue they came from (by name, default exchange)."""
    from services.common.amqp import ConfirmingPublisher, take_dead_letters

    publisher = ConfirmingPublisher(config["AMQP_URI"])

    def replay(body, headers):
        queue = _dead_letter_queue(headers)
        if not queue or (args.queue and queue != args.queue):
            return False
        clean = {k: v for k, v in headers.items() if not k.startswith("x-")}
        publisher.publish_batch([("", queue, body, clean)])
        return True

    try:
        count = take_dead_letters(config["AMQP_URI"], replay)
    finally:
        publisher.close()
    print(f"{count} message(s) replayed")
    return 0


def cmd_audit_verify(config: dict, args) -> int:
    from services.audit import commands

    result = commands.verify(_db(config, "audit"))
    print(json.dumps(result, default=str))
    return 0 if result.get("ok") else 1


def cmd_registry_reconcile(config: dict, args) -> int:
    """Compare the registry's read models with the queue and allocation services (which must
    be running); 0 when they agree (or, with --repair, every difference was repaired)."""
    from services.registry import reconcile

    models = [m.strip() for m in args.only.split(",") if m.strip()] if args.only else None
    report = reconcile.reconcile(config, repair_rows=args.repair, models=models,
                                 page_size=args.page_size, settle=args.settle)
    if args.repair:
        return 1 if report.skipped else 0
    return 1 if report.total else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kezek", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config file (default: config.yaml or $KEZEK_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply migrations and declare queues").set_defaults(
        func=cmd_migrate)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="demo", required=True)
    load = demo.add_parser("load", help="load a deterministic synthetic region")
    load.add_argument("--scale", choices=["small", "city", "country"], default="small")
    load.add_argument("--seed", type=int, default=1)
    load.set_defaults(func=cmd_demo_load)

    users = sub.add_parser("users", help="accounts").add_subparsers(dest="users", required=True)
    add = users.add_parser("add", help="create a staff/officer/auditor/operator account")
    add.add_argument("--role", required=True, choices=["staff", "officer", "auditor", "operator"])
    add.add_argument("--phone", required=True)
    add.add_argument("--organization", type=int)
    add.set_defaults(func=cmd_users_add)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq", required=True)
    dlq.add_parser("list", help="list dead-lettered messages").set_defaults(func=cmd_dlq_list)
    replay = dlq.add_parser("replay", help="send dead letters back to their queues")
    replay.add_argument("--queue", help="only messages from this queue")
    replay.set_defaults(func=cmd_dlq_replay)

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit", required=True)
    audit.add_parser("verify", help="recompute the audit hash chain").set_defaults(
        func=cmd_audit_verify)

    registry = sub.add_parser("registry", help="public registries").add_subparsers(
        dest="registry", required=True)
    rec = registry.add_parser(
        "reconcile", help="compare each read model with its source service over RPC")
    rec.add_argument("--repair", action="store_true",
                     help="replace differing rows with the source's snapshot, delete extra rows")
    rec.add_argument("--only", help="comma-separated read models: queue,places,directions,releases")
    rec.add_argument("--settle", type=float, default=5.0,
                     help="seconds a difference must last to count (events in flight)")
    rec.add_argument("--page-size", type=int, default=5000,
                     help="snapshots asked for in one RPC call (at most 5,000)")
    rec.set_defaults(func=cmd_registry_reconcile)

    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        return args.func(config, args)
    except Exception as exc:  # a clear line for operators, not a traceback
        from services.common.errors import DomainError

        if isinstance(exc, DomainError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
