"""The whole system as `make run` starts it (every service in one `nameko run` process), on an
isolated database and vhost, driven over HTTP. Used by the end-to-end tests, the browser tests,
the schemathesis run and the gateway benchmark."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import requests
import yaml

from tests.conftest import destroy_isolated_config, make_isolated_config
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
ALL_SERVICES = [
    "services.registry.service",
    "services.applications.service",
    "services.queue.service",
    "services.allocation.service",
    "services.audit.service",
    "services.gateway.service",
]


class System:
    def __init__(self, config: dict, base_url: str, log_path: Path):
        self.config = config
        self.base_url = base_url
        self.log_path = log_path

    def url(self, path: str) -> str:
        return self.base_url + path

    def sms_code(self, phone: str, after: str | None = None) -> str:
        """The newest one-time code the development SMS sender wrote for this phone (sent after
        the given ``sent_at``, if any)."""
        path = Path(self.config["KEZEK"]["SMS_OUTBOX"])
        if not path.is_absolute():
            path = ROOT / path

        def newest():
            if not path.exists():
                return None
            codes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            codes = [c for c in codes if c["phone"] == phone]
            if after is not None:
                codes = [c for c in codes if str(c.get("sent_at")) > after]
            return codes[-1]["code"] if codes else None

        return wait_for(newest, timeout=10, message=f"SMS code for {phone}")

    def sign_in(self, phone: str, fingerprint: str = "e2e-device") -> dict:
        headers = {"X-Device-Fingerprint": fingerprint}
        r = requests.post(
            self.url("/api/v1/auth/otp"), json={"phone": phone}, headers=headers, timeout=10
        )
        assert r.status_code == 202, r.text
        code = self.sms_code(phone)
        r = requests.post(
            self.url("/api/v1/auth/token"),
            json={"phone": phone, "code": code},
            headers=headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", **headers})
        return {"session": session, "role": r.json()["role"], "token": token}

    def add_user(self, role: str, phone: str, organization_id: int | None = None) -> None:
        from services.common.db import DatabaseAccess, get_engine
        from services.gateway import accounts

        accounts.add_user(
            DatabaseAccess(get_engine(self.config["DB_URL"]), "gateway"),
            role=role,
            phone=phone,
            organization_id=organization_id,
        )


def start_system(config: dict, tmp: Path, services=ALL_SERVICES) -> subprocess.Popen:
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
    log = open(tmp / "system.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "nameko", "run", "--config", str(config_file), *services],
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@contextlib.contextmanager
def running_system(tmp: Path, settings: dict | None = None) -> Iterator[System]:
    """A fresh isolated database and vhost, every service started in one process, torn down
    (and the database dropped) on exit. ``settings`` override keys of the KEZEK section."""
    config = make_isolated_config()
    config["KEZEK"].update(settings or {})
    proc = start_system(config, tmp)
    base_url = "http://" + config["WEB_SERVER_ADDRESS"]

    def up():
        if proc.poll() is not None:
            raise AssertionError("system exited:\n" + (tmp / "system.log").read_text()[-3000:])
        try:
            return requests.get(base_url + "/api/v1/districts", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=120, interval=0.3, message="system up")
        yield System(config, base_url, tmp / "system.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if os.environ.get("KEZEK_E2E_SHOW_LOG"):
            print((tmp / "system.log").read_text()[-5000:])
        destroy_isolated_config(config)


# -- test data ----------------------------------------------------------------------------------
def random_phone() -> str:
    return "+7707" + "".join(random.choices("0123456789", k=7))


def valid_iin(birth: dt.date, sex: str) -> str:
    """A random IIN with a valid check digit for this birth date."""
    from services.applications.domain import make_iin

    for serial in range(random.randint(0, 9000), 10000):
        try:
            return make_iin(birth, sex, serial)
        except ValueError:
            continue
    raise AssertionError("no IIN")
