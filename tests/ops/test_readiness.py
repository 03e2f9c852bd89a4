"""Liveness and readiness as an orchestrator sees them: /healthz answers while the process
lives; /readyz turns 503 when the broker goes away and 200 again when it returns.

Stopping RabbitMQ (``rabbitmqctl stop_app``) stops it for everyone on this machine, so the test
does it once and starts it again as soon as the services have noticed."""

from __future__ import annotations

import copy

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.conftest import destroy_isolated_config, free_port, rabbitmqctl
from tests.helpers import wait_for
from tests.ops.conftest import Cluster, cluster_config


def probe(url: str) -> tuple[int, dict] | None:
    try:
        r = requests.get(url, timeout=10)
    except requests.RequestException:
        return None
    return r.status_code, r.json()


def status_of(url: str) -> int | None:
    try:
        return requests.get(url, timeout=15).status_code
    except requests.RequestException:
        return None


@pytest.fixture
def cluster(tmp_path):
    config = cluster_config()
    cluster = Cluster(config, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        destroy_isolated_config(config)


def test_readiness_follows_the_broker_and_liveness_does_not(cluster):
    cluster.start("registry")
    cluster.start("gateway")
    cluster.wait_ready(["registry", "gateway"])
    probes = {
        "registry": (cluster.metrics_url("registry", "/healthz"),
                     cluster.metrics_url("registry", "/readyz")),
        "gateway": (cluster.base_url + "/healthz", cluster.base_url + "/readyz"),
    }
    for service, (healthz, readyz) in probes.items():
        assert probe(healthz) == (200, {"alive": True, "service": service})
        status, body = wait_for(lambda url=readyz: probe(url), timeout=10,
                                message=f"{service} readyz")
        assert status == 200, body
        assert body["ready"] is True
        assert body["checks"]["broker"] is True and body["checks"]["database"] is True
    assert probe(probes["registry"][1])[1]["checks"]["outbox"] is True

    rabbitmqctl("stop_app")
    try:
        for service, (healthz, readyz) in probes.items():
            status, body = wait_for(lambda url=readyz: (p := probe(url)) and p[0] == 503 and p,
                                    timeout=20, interval=0.2,
                                    message=f"{service} not ready without the broker")
            assert body["ready"] is False
            assert body["checks"]["broker"] is False
            assert body["checks"]["database"] is True  # it says what is wrong
            assert probe(healthz)[0] == 200  # alive: no reason to restart it
    finally:
        rabbitmqctl("start_app")

    for service, (healthz, readyz) in probes.items():
        wait_for(lambda url=readyz: (p := probe(url)) and p[0] == 200, timeout=60, interval=0.3,
                 message=f"{service} ready again")
    # and it works again: the gateway's call to the registry is answered
    # a call made while the gateway was still re-subscribing its reply queue gets its 504 (or
    # our read timeout) once; the next ones are answered
    wait_for(lambda: status_of(cluster.base_url + "/api/v1/districts") == 200,
             timeout=90, interval=0.5, message="gateway -> registry after the broker returned")
    for label in cluster.procs:
        assert cluster.alive(label)


def test_readiness_is_false_while_the_database_does_not_answer(cluster):
    # a port nothing listens on: the service starts (it connects lazily) but is not ready
    config = copy.deepcopy(cluster.config)
    config["DB_URL"] = make_url(config["DB_URL"]).set(port=free_port()).render_as_string(
        hide_password=False)
    cluster.config = config
    cluster.write_config()
    cluster.start("registry")
    cluster.wait_ready(["registry"])
    status, body = wait_for(lambda: probe(cluster.metrics_url("registry", "/readyz")),
                            timeout=20, message="registry readyz")
    assert status == 503
    assert body["checks"] == {"broker": True, "database": False}
    assert probe(cluster.metrics_url("registry", "/healthz"))[0] == 200

