"""Alembic per service schema: each service keeps its own migrations and version table.

``services/<name>/migrations/env.py`` is two lines calling :func:`run_env`; ``kezek migrate``
calls :func:`upgrade` for every service.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

SERVICES_WITH_SCHEMA = ["registry", "applications", "queue", "allocation", "audit", "gateway"]
ROOT = Path(__file__).resolve().parents[1]


def alembic_config(db_url: str, service: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def upgrade(db_url: str, services: list[str] | None = None) -> None:
    from alembic import command

    for service in SERVICES_WITH_SCHEMA if services is None else services:
        command.upgrade(alembic_config(db_url, service), "head")


def run_env(service: str) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {service}"))
        conn.commit()
        context.configure(
            connection=conn,
            version_table_schema=service,
            version_table=f"alembic_version",
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def ensure_database(db_url: str) -> None:
    """Create the database named in the URL if it does not exist."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": url.database}).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def drop_database(db_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()
