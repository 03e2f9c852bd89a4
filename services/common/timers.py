"""Periodic jobs that run on one instance only.

Nameko timers fire on every instance; :func:`run_exclusively` lets the first instance that gets
a PostgreSQL advisory lock run the job and makes the others skip this tick.
"""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import text

from services.common.db import DatabaseAccess, lock_key

log = logging.getLogger(__name__)


def run_exclusively(db: DatabaseAccess, name: str, job: Callable[[], object]) -> bool:
    """Run ``job()`` if no other instance is running ``name``; False if it was skipped."""
    with db.engine.connect() as conn:
        key = lock_key(f"timer:{db.schema}:{name}")
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            return False
        try:
            job()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    return True
