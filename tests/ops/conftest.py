"""Operations tests: every service its own `nameko run` process (as `make run-scaled` and the
containers run them), each with its own metrics port, on an isolated database and vhost."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from kombu import Connection

from tests.conftest import destroy_isolated_config, free_port, make_isolated_config
from tests.helpers import wait_for
from tests.system import System

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "applications", "queue", "allocation", "audit", "gateway")
CLASSES = {"registry": "RegistryService", "applications": "ApplicationsService",
           "queue": "QueueService", "allocation": "AllocationService", "audit": "AuditService",
           "gateway": "GatewayService"}


def consumers(amqp_uri: str, queue: str) -> int:
    """How many consumers a queue has (0 if it is not declared yet)."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).consumer_count
        except Exception:  # noqa: BLE001 - not declared yet: nobody consumes it
            return 0


def json_lines(path: Path) -> list[dict]:
    """The JSON log lines of a captured output file (other lines, e.g. tracebacks, skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class Cluster:
    """Service processes started from one config file; ``stop_all`` sends SIGTERM to each."""

    def __init__(self, config: dict, tmp: Path):
        self.config = config
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.config_path = tmp / "config.yaml"
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True))

    @property
    def amqp_uri(self) -> str:
        return self.config["AMQP_URI"]

    def metrics_url(self, service: str, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.config['KEZEK']['METRICS_PORTS'][service]}{path}"

    @property
    def base_url(self) -> str:
        return "http://" + self.config["WEB_SERVER_ADDRESS"]

    def start(self, service: str, label: str | None = None) -> subprocess.Popen:
        label = label or service
        log_path = self.tmp / f"{label}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nameko", "run", "--config", str(self.config_path),
                 f"services.{service}.service:{CLASSES[service]}"],
                cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[label], self.logs[label] = proc, log_path
        return proc

    def alive(self, label: str) -> bool:
        proc = self.procs[label]
        if proc.poll() is not None:
            raise AssertionError(f"{label} exited with {proc.returncode}:\n"
                                 + self.logs[label].read_text(errors="replace")[-3000:])
        return True

    def wait_ready(self, services, timeout: float = 60) -> None:
        """Each service consumes its RPC queue (the gateway: answers HTTP)."""

        def up() -> bool:
            for label in self.procs:
                self.alive(label)
            for service in services:
                if service == "gateway":
                    try:
                        requests.get(self.base_url + "/healthz", timeout=2).raise_for_status()
                    except requests.RequestException:
                        return False
                elif consumers(self.amqp_uri, f"rpc-{service}") < 1:
                    return False
            return True

        wait_for(up, timeout=timeout, interval=0.3, message=f"{', '.join(services)} up")

    def stop(self, label: str, timeout: float = 30) -> int:
        proc = self.procs.pop(label)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for label in list(self.procs):
            self.stop(label)

    def log_text(self, label: str) -> str:
        return self.logs[label].read_text(errors="replace")


def cluster_config(**settings) -> dict:
    """An isolated config with a free metrics port per service and a free gateway port."""
    config = make_isolated_config(uuid.uuid4().hex[:10])
    config = copy.deepcopy(config)
    config["KEZEK"]["METRICS_PORTS"] = {s: free_port() for s in SERVICES}
    config["KEZEK"].update(settings)
    return config


@pytest.fixture(scope="package")
def ops_cluster(tmp_path_factory):
    """The whole system, one process per service, shared by the tests of this package that
    only observe it (metrics, request ids)."""
    config = cluster_config(ALLOCATION_TIMER_SECONDS=1)
    cluster = Cluster(config, tmp_path_factory.mktemp("ops"))
    try:
        for service in SERVICES:
            cluster.start(service)
        cluster.wait_ready(SERVICES)
        yield cluster
    finally:
        cluster.stop_all()
        if os.environ.get("KEZEK_OPS_SHOW_LOG"):
            for label, path in cluster.logs.items():
                print(f"== {label}\n" + path.read_text(errors="replace")[-3000:])
        destroy_isolated_config(config)


@pytest.fixture(scope="package")
def ops_system(ops_cluster) -> System:
    return System(ops_cluster.config, ops_cluster.base_url, ops_cluster.logs["gateway"])
