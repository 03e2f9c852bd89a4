"""Shared fixtures. Every test session gets its own PostgreSQL database and RabbitMQ vhost with
random names, migrated and declared, and drops them at the end: runs never see each other.
"""

import eventlet

eventlet.monkey_patch()  # before anything imports socket/threading (Nameko needs it)

import copy  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import services  # noqa: E402,F401  (sets PSYCOPG_WAIT_FUNC)
from services.common.config import load_config  # noqa: E402

from tests import leftovers  # noqa: E402
from tests.helpers import wait_for  # noqa: E402,F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=180)


def comment_database(db_url: str, comment: str) -> None:
    from sqlalchemy import create_engine, text

    url = make_url(db_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        literal = comment.replace("'", "''")
        conn.execute(text(f'COMMENT ON DATABASE "{url.database}" IS \'{literal}\''))
    admin.dispose()


def make_isolated_config(tag: str | None = None) -> dict:
    """A config pointing at a new database and vhost (created, migrated and declared)."""
    from services.common import topology
    from services.common.migrations import ensure_database, upgrade

    tag = tag or uuid.uuid4().hex[:10]
    config = copy.deepcopy(load_config())
    db_url = make_url(config["DB_URL"]).set(database=f"kezek_test_{tag}")
    config["DB_URL"] = db_url.render_as_string(hide_password=False)
    vhost = f"kezek_test_{tag}"
    # marked with its creation time, so tests.leftovers can drop it if this run never tears down
    rabbitmqctl("add_vhost", vhost, "--description", leftovers.mark())
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    config["AMQP_URI"] = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    config["KEZEK"]["METRICS_PORTS"] = {k: 0 for k in config["KEZEK"]["METRICS_PORTS"]}
    config["KEZEK"]["SMS_OUTBOX"] = f"/tmp/kezek-sms-{tag}.jsonl"
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    config["KEZEK_TEST_TAG"] = tag
    config["KEZEK_VHOST"] = vhost
    ensure_database(config["DB_URL"])
    comment_database(config["DB_URL"], leftovers.mark())
    only = os.environ.get("KEZEK_TEST_SERVICES")  # e.g. "" while developing services/common alone
    if only is None:
        upgrade(config["DB_URL"])
        topology.declare_all(config)
    else:
        upgrade(config["DB_URL"], [s for s in only.split(",") if s])
        from services.common import amqp

        amqp.declare(config["AMQP_URI"], [amqp.dead_letter_queue(), amqp.audit_queue()])
    return config


def destroy_isolated_config(config: dict) -> None:
    from services.common.db import dispose_engines
    from services.common.migrations import drop_database

    dispose_engines()
    if os.environ.get("KEZEK_KEEP_TEST_DB"):
        return
    drop_database(config["DB_URL"])
    rabbitmqctl("delete_vhost", config["KEZEK_VHOST"])


@pytest.fixture(scope="session")
def kezek_config():
    """Session-wide isolated config. Tests use random names for the data they create."""
    config = make_isolated_config()
    yield config
    destroy_isolated_config(config)


@pytest.fixture
def db_engine(kezek_config):
    from services.common.db import get_engine

    return get_engine(kezek_config["DB_URL"])


@pytest.fixture
def rpc(kezek_config):
    """``with rpc() as cluster: cluster.queue.lookup(...)``"""
    from nameko.standalone.rpc import ClusterRpcProxy

    def make(timeout: float = 30):
        return ClusterRpcProxy(kezek_config, timeout=timeout)

    return make


@pytest.fixture
def start_services(kezek_config, runner_factory):
    """``start_services(RegistryService, QueueService, config=None)`` runs them in-process."""

    def start(*classes, config=None):
        runner = runner_factory(config or kezek_config, *classes)
        runner.start()
        return runner

    return start
