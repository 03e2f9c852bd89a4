"""The pieces of the fault test: the system as separate `nameko run` processes that can be killed
and restarted, the broker and database restarted, an HTTP client that retries like a real one,
and what tells that the system has settled. The checks themselves are in test_faults.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import text

from services.applications.domain import make_iin
from services.common import topology
from tests.conftest import free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ("registry", "applications", "queue", "allocation", "audit", "gateway")
# (service, instances): allocation and queue run twice, as the issue asks; the gateway twice so
# that clients have somewhere to go while one is down
LAYOUT = (
    ("registry", 1),
    ("applications", 1),
    ("queue", 2),
    ("allocation", 2),
    ("audit", 1),
    ("gateway", 2),
)


# module:Class, so that nothing else a service module imports is taken for a service
SERVICE_PATHS = {path.split(".")[1]: path for path in topology.SERVICE_CLASSES}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ------------------------------------------------------------------------------------
@dataclass
class Instance:
    service: str
    index: int
    config_file: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """One `nameko run` process per service instance, on an isolated database and vhost."""

    def __init__(self, config: dict, tmp: Path):
        self.config = config
        self.tmp = tmp
        self.instances: list[Instance] = []
        self.gateways: list[str] = []
        self.kills = 0
        self.lock = threading.Lock()
        self.config_file = self._write_config("config.yaml", config)
        for service, count in LAYOUT:
            for index in range(count):
                config_file = self.config_file
                if service == "gateway":
                    address = f"127.0.0.1:{free_port()}"
                    self.gateways.append(f"http://{address}")
                    config_file = self._write_config(
                        f"gateway-{index}.yaml", {**config, "WEB_SERVER_ADDRESS": address})
                self.instances.append(Instance(service, index, config_file,
                                               tmp / f"{service}-{index}.log"))

    def _write_config(self, name: str, config: dict) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        return path

    def start(self, instance: Instance) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = open(instance.log_path, "ab")
        instance.proc = subprocess.Popen(
            [sys.executable, "-m", "nameko", "run", "--config", str(instance.config_file),
             SERVICE_PATHS[instance.service]],
            cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        out.close()

    def start_all(self) -> None:
        for instance in self.instances:
            self.start(instance)
        for base in self.gateways:
            wait_for(lambda b=base: self._gateway_up(b), timeout=90, interval=0.3,
                     message=f"gateway {base} up")

    def _gateway_up(self, base: str) -> bool:
        dead = [i.name for i in self.instances if i.proc and i.proc.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited at start: see {self.tmp}")
        try:
            return requests.get(base + "/api/v1/districts", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, instance: Instance) -> None:
        """SIGKILL: no stop(), no acks, no goodbyes."""
        if instance.alive():
            os.kill(instance.proc.pid, signal.SIGKILL)
            instance.proc.wait()
            with self.lock:
                self.kills += 1

    def restart_dead(self) -> list[str]:
        """Start again whatever is not running (a restart policy would); their names."""
        dead = [i for i in self.instances if not i.alive()]
        for instance in dead:
            self.start(instance)
        return [i.name for i in dead]

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.alive():
                instance.proc.terminate()
        for instance in self.instances:
            if instance.proc is None:
                continue
            try:
                instance.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                instance.proc.kill()
                instance.proc.wait()


# -- the broker and the database --------------------------------------------------------------
def restart_rabbitmq() -> float:
    """Stop and start the RabbitMQ application (every connection drops; durable queues stay)."""
    started = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True,
                   timeout=120)
    time.sleep(1)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True,
                   timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=False, capture_output=True,
                   timeout=120)
    return time.monotonic() - started


def restart_postgresql() -> float:
    """Restart the PostgreSQL cluster (fast shutdown: every session is cut)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    started = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart",
                    "-m", "fast"], check=True, capture_output=True, timeout=120)
    return time.monotonic() - started


def queue_depths(vhost: str) -> dict[str, int]:
    """Messages (ready and unacknowledged) in every queue of the vhost."""
    done = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:  # e.g. the broker is still starting: unknown is not empty
        return {"(rabbitmqctl failed)": done.returncode}
    out = done.stdout
    depths = {}
    for line in out.splitlines()[1:]:
        name, _, count = line.rpartition("\t")
        if name and count.isdigit():
            depths[name] = int(count)
    return depths


# -- the client ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a client saw for one logical request (after its retries)."""

    kind: str
    status: int | None
    body: Any
    request_ids: list[str] = field(default_factory=list)
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


RETRIED_CODES = {"IDEMPOTENCY_IN_PROGRESS"}


class Client:
    """A signed-in user who retries like a well-behaved app: the same Idempotency-Key, another
    gateway after a connection failure, until an answer other than a 5xx comes back."""

    def __init__(self, gateways: list[str], token: str | None = None, give_up_after: float = 90):
        self.gateways = gateways
        self.session = requests.Session()
        self.session.headers["X-Device-Fingerprint"] = uuid.uuid4().hex
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.give_up_after = give_up_after
        self.requests = 0

    def call(self, kind: str, method: str, path: str, body: Any = None,
             timeout: float = 20) -> Outcome:
        key = uuid.uuid4().hex
        outcome = Outcome(kind, None, None)
        deadline = time.monotonic() + self.give_up_after
        order = itertools.cycle(random.sample(self.gateways, len(self.gateways)))
        while time.monotonic() < deadline:
            base = next(order)
            outcome.attempts += 1
            self.requests += 1
            try:
                r = self.session.request(method, base + path, json=body, timeout=timeout,
                                         headers={"Idempotency-Key": key})
            except requests.RequestException:
                time.sleep(0.3)
                continue
            if r.headers.get("X-Request-Id"):
                outcome.request_ids.append(r.headers["X-Request-Id"])
            try:
                data = r.json()
            except ValueError:
                data = r.text
            outcome.status, outcome.body = r.status_code, data
            code = data.get("error", {}).get("code") if isinstance(data, dict) else None
            if r.status_code >= 500 or code in RETRIED_CODES:
                time.sleep(0.5)
                continue
            return outcome
        return outcome


def sms_code(config: dict, phone: str) -> str:
    path = Path(config["KEZEK"]["SMS_OUTBOX"])

    def newest():
        if not path.exists():
            return None
        codes = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        codes = [c["code"] for c in codes if c["phone"] == phone]
        return codes[-1] if codes else None

    return wait_for(newest, timeout=20, message=f"SMS code for {phone}")


def sign_in(config: dict, base: str, phone: str) -> str:
    r = requests.post(base + "/api/v1/auth/otp", json={"phone": phone}, timeout=20)
    assert r.status_code == 202, r.text
    r = requests.post(base + "/api/v1/auth/token",
                      json={"phone": phone, "code": sms_code(config, phone)}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def new_phone() -> str:
    return "+7702" + "".join(random.choices("0123456789", k=7))


class Children:
    """Distinct valid child IINs, all of one birth year."""

    def __init__(self, birth_year: int):
        self.birth_year = birth_year
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def next(self) -> tuple[str, dt.date]:
        while True:
            birth = dt.date(self.birth_year, 1, 1) + dt.timedelta(days=random.randint(0, 180))
            try:
                iin = make_iin(birth, random.choice("MF"), random.randint(0, 9999))
            except ValueError:
                continue
            with self.lock:
                if iin not in self.seen:
                    self.seen.add(iin)
                    return iin, birth


# -- settling and checking ------------------------------------------------------------------
def unsent_outbox(conn) -> dict[str, int]:
    out = {}
    for schema in SCHEMAS:
        if schema == "gateway":
            continue
        n = conn.execute(text(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"))
        out[schema] = int(n.scalar())
    return out


def settled(engine, vhost: str) -> dict | None:
    """None once nothing is in flight: no unsent outbox row, no message in any queue but the
    dead-letter, checkpoint and RPC reply queues, no place waiting for allocation; else what
    is still moving."""
    with engine.connect() as conn:
        unsent = {k: v for k, v in unsent_outbox(conn).items() if v}
        waiting = conn.execute(text(
            "SELECT count(*) FROM allocation.places WHERE status = 'priority'")).scalar()
    # a killed caller's reply queue keeps its late answers until it expires: nobody waits there
    depths = {k: v for k, v in queue_depths(vhost).items()
              if v and k not in ("kezek.dlq", "kezek.audit.checkpoints")
              and not k.startswith("rpc.reply-")}
    if unsent or depths or waiting:
        return {"outbox": unsent, "queues": depths, "places_awaiting_allocation": waiting}
    return None


def wait_until_settled(engine, vhost: str, timeout: float) -> float:
    """Wait until :func:`settled` holds twice in a row; seconds it took. Raises with what was
    still moving."""
    started = time.monotonic()
    deadline = started + timeout
    state: Any = "not looked yet"
    quiet = 0
    while time.monotonic() < deadline:
        try:
            state = settled(engine, vhost)
        except Exception as exc:  # noqa: BLE001 - the database may still be coming back
            state = repr(exc)
        quiet = quiet + 1 if state is None else 0
        if quiet >= 2:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"not settled after {timeout:.0f}s: {state}")
