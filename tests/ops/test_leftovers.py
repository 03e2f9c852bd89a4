"""What an interrupted test run left behind is dropped by the next `make test`; what a run still
going on uses is not."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.common.config import load_config
from tests import leftovers
from tests.conftest import comment_database, rabbitmqctl

ROOT = Path(__file__).resolve().parents[2]


def vhosts() -> set[str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_vhosts", "name"], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return set(out.split()[1:])


def databases(admin) -> set[str]:
    with admin.connect() as conn:
        return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())


def test_the_creation_mark_reads_back():
    assert leftovers.created_at(leftovers.mark(1764000000)) == 1764000000
    assert leftovers.created_at("Default virtual host") is None
    assert leftovers.created_at(None) is None


def test_abandoned_runs_are_dropped_and_live_ones_kept():
    tag = uuid.uuid4().hex[:8]
    old, fresh = f"kezek_test_old{tag}", f"kezek_test_new{tag}"
    url = make_url(load_config()["DB_URL"])
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    four_hours_ago = time.time() - 4 * 3600
    try:
        for name, made in ((old, four_hours_ago), (fresh, time.time())):
            rabbitmqctl("add_vhost", name, "--description", leftovers.mark(made))
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            comment_database(url.set(database=name).render_as_string(hide_password=False),
                             leftovers.mark(made))

        done = subprocess.run([sys.executable, "-m", "tests.leftovers", "--older-than-hours", "3"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr

        assert old not in vhosts() and old not in databases(admin)
        assert fresh in vhosts() and fresh in databases(admin)
    finally:
        for name in (old, fresh):
            if name in vhosts():
                rabbitmqctl("delete_vhost", name)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
