"""Drop what interrupted test and benchmark runs left behind: ``kezek_test_*`` databases and
RabbitMQ vhosts whose run ended without its teardown (a killed pytest, a timed-out benchmark).

    .venv/bin/python -m tests.leftovers [--older-than-hours 3] [--dry-run]

Every run marks what it creates with its creation time (the vhost's description, the
database's comment: ``kezek test, created <unix seconds>``), so a run still going on (created
less than ``--older-than-hours`` ago) is never touched. Leftovers unmarked (made before the
mark existed) are dropped only when nothing is connected to them.

Why it matters: each vhost holds about twenty quorum queues, each a Raft member in the broker.
A few hundred abandoned vhosts make every ``rabbitmqctl`` call crawl, until adding a vhost for
the next run times out. ``make test`` runs this first.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

PREFIX = "kezek_test_"
MARK = "kezek test, created "


def mark(now: float | None = None) -> str:
    return f"{MARK}{int(now if now is not None else time.time())}"


def created_at(description: str | None) -> float | None:
    found = re.search(re.escape(MARK) + r"(\d+)", description or "")
    return float(found.group(1)) if found else None


def _rabbitmqctl(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=timeout).stdout


def stale_vhosts(cutoff: float) -> list[str]:
    lines = _rabbitmqctl("list_vhosts", "name", "description").splitlines()
    rows = [line.split("\t") + [""] for line in lines[1:] if line.startswith(PREFIX)]
    connected = {line.strip() for line in
                 _rabbitmqctl("list_connections", "vhost").splitlines()[1:]}
    stale = []
    for name, description, *_ in rows:
        made = created_at(description)
        if (made is None and name not in connected) or (made is not None and made < cutoff):
            stale.append(name)
    return stale


def stale_databases(engine, cutoff: float) -> list[str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT d.datname, shobj_description(d.oid, 'pg_database') AS comment,
                      (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)
                        AS sessions
               FROM pg_database d WHERE d.datname LIKE :prefix"""),
            {"prefix": PREFIX + "%"}).all()
    stale = []
    for name, comment, sessions in rows:
        made = created_at(comment)
        if (made is None and sessions == 0) or (made is not None and made < cutoff):
            stale.append(name)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than-hours", type=float, default=3.0)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    cutoff = time.time() - args.older_than_hours * 3600

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from services.common.config import load_config

    url = make_url(load_config()["DB_URL"]).set(database="postgres")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    databases = stale_databases(engine, cutoff)
    vhosts = stale_vhosts(cutoff)
    verb = "would drop" if args.dry_run else "dropping"
    if databases or vhosts:
        print(f"test leftovers: {verb} {len(databases)} databases, {len(vhosts)} vhosts",
              flush=True)
    if not args.dry_run:
        with engine.connect() as conn:
            for name in databases:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for name in vhosts:
            _rabbitmqctl("delete_vhost", name, timeout=300)
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
