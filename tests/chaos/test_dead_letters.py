"""Dead letters with a real service (issue 9): poison messages sent to the queue service end in
the dead-letter queue with their reason while the service keeps serving; `kezek dlq list` shows
them, the metrics count them, and `kezek dlq replay` sends a message back once its cause is
fixed."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid

import pytest
import requests
import yaml

from services import cli
from services.common import amqp, contracts
from services.common.events import handler_queue_name
from services.common.errors import NotFound
from services.queue.service import QueueService
from tests.conftest import free_port
from tests.helpers import random_name, wait_for

QUEUE = handler_queue_name("allocation", "direction_issued", "queue", "on_direction_issued")
BIRTH_YEAR = dt.date.today().year - 3


@pytest.fixture
def queue_service(kezek_config, start_services, tmp_path):
    """The queue service with its metrics port on, and a config file for the `kezek` CLI."""
    config = copy.deepcopy(kezek_config)
    port = free_port()
    config["KEZEK"]["METRICS_PORTS"] = {**config["KEZEK"]["METRICS_PORTS"], "queue": port}
    start_services(QueueService, config=config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
    return {"config": config, "file": config_file, "metrics": f"http://127.0.0.1:{port}/metrics"}


def kezek(service, capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main(["--config", str(service["file"]), *args])
    return status, capsys.readouterr().out


def dead_letters(service, capsys) -> list[dict]:
    status, out = kezek(service, capsys, "dlq", "list")
    assert status == 0
    lines = out.strip().splitlines()
    assert re.fullmatch(r"\d+ dead-lettered message\(s\)", lines[-1]), out
    assert int(lines[-1].split()[0]) == len(lines) - 1
    return [json.loads(line) for line in lines[:-1]]


def mine(service, capsys, *marks: str) -> list[dict]:
    """Dead letters whose (listed, shortened) body shows one of the marks."""
    return [row for row in dead_letters(service, capsys)
            if any(mark in row["body"] for mark in marks)]


def metric(svc, name: str, **labels) -> float:
    text = requests.get(svc["metrics"], timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return 0.0


def publish(service, *bodies) -> None:
    """Straight into the queue service's direction_issued queue (nobody else sees them)."""
    publisher = amqp.ConfirmingPublisher(service["config"]["AMQP_URI"])
    try:
        publisher.publish_batch([("", QUEUE, body, {}) for body in bodies])
    finally:
        publisher.close()


def entry(number: str) -> dict:
    """An application_filed's data, as the queue's enqueue takes it."""
    return {
        "application_number": number, "applicant_name": "Серікбаев Б. Е.",
        "child_name": "Серікбаев А. Б.", "child_birth_date": f"{BIRTH_YEAR}-03-01",
        "birth_year": BIRTH_YEAR, "queue_type": "general", "language": "kk",
        "district": random_name("dlq"), "preferred_organizations": [1],
        "desired_start": f"{BIRTH_YEAR + 5}-09-01",
        "filed_at": dt.datetime.now(dt.timezone.utc).isoformat(), "benefit": None,
        "current_organization_id": None, "current_group_id": None,
        "applicant_id": "applicant:+77020000000",
    }


def direction_issued(number: str) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return contracts.envelope("allocation", "direction_issued", {
        "number": f"D{uuid.uuid4().int % 10**9:09d}", "revision": 1, "status": "issued",
        "type": "priority", "place_id": str(uuid.uuid4()), "organization_id": 1,
        "group_id": 1, "application_number": number, "child_name": "Серікбаев А. Б.",
        "birth_year": BIRTH_YEAR, "language": "kk", "issued_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(days=7)).isoformat(), "closed_at": None,
        "reason": None})


def new_number() -> str:
    return f"A{uuid.uuid4().int % 10**9:09d}"


def test_poison_messages_go_to_the_dead_letter_queue_with_their_reason(queue_service, rpc,
                                                                        capsys):
    service, tag = queue_service, uuid.uuid4().hex
    before = metric(service, "kezek_messages_consumed_total", service="queue",
                    handler="on_direction_issued", outcome="dead_lettered")
    unknown_version = direction_issued(f"A-{tag}")
    unknown_version["version"] = 99
    no_envelope = {"event_type": "direction_issued", "note": tag}
    missing_fields = direction_issued(f"A-{tag}")
    del missing_fields["data"]["place_id"]
    publish(service, unknown_version, no_envelope, missing_fields, f"{{not json {tag}")

    # the service keeps serving: a good event after the poison ones is handled...
    number = new_number()
    with rpc() as cluster:
        cluster.queue.enqueue(entry(number))
        publish(service, direction_issued(number))
        wait_for(lambda: cluster.queue.lookup(number)["status"] == "offered", timeout=20,
                 message="the good event handled")
        # ...and so are RPC calls
        with pytest.raises(NotFound):
            cluster.queue.lookup(f"A-{tag}")

    marks = (tag, unknown_version["event_id"], missing_fields["event_id"])
    rows = wait_for(lambda: len(r := mine(service, capsys, *marks)) == 4 and r, timeout=30,
                    message="four dead letters")
    assert {row["queue"] for row in rows} == {QUEUE}
    reasons = sorted(row["reason"] for row in rows)
    assert any("unknown version 99 of direction_issued" in r for r in reasons), reasons
    assert any("envelope lacks event_id" in r for r in reasons), reasons
    assert any("data lacks ['place_id']" in r for r in reasons), reasons
    assert any("not json" in row["body"] and row["reason"].startswith("undecodable message")
               for row in rows), rows
    # the metrics count them: the handler's dead-lettered messages and the queue's depth
    after = metric(service, "kezek_messages_consumed_total", service="queue",
                   handler="on_direction_issued", outcome="dead_lettered")
    assert after - before >= 3
    assert metric(service, "kezek_dead_letter_messages") >= 4
    # nothing of this was applied
    with rpc() as cluster:
        with pytest.raises(NotFound):
            cluster.queue.lookup(f"A-{tag}")
    amqp.take_dead_letters(service["config"]["AMQP_URI"],
                           lambda body, headers: any(mark in body for mark in marks))


def test_a_dead_letter_is_replayed_once_its_cause_is_fixed(queue_service, rpc, capsys):
    """A direction for an application the queue does not know fails every attempt; once the
    application is in the queue, `kezek dlq replay` makes the same message succeed."""
    service, number = queue_service, new_number()
    message = direction_issued(number)
    publish(service, message)
    (row,) = wait_for(lambda: mine(service, capsys, message["event_id"]), timeout=30,
                      message="the failing message dead-lettered")
    assert row["queue"] == QUEUE
    assert "NotFound" in row["reason"] and "is not in the queue" in row["reason"]
    depth = metric(service, "kezek_dead_letter_messages")
    assert depth >= 1

    with rpc() as cluster:
        cluster.queue.enqueue(entry(number))  # the fix
        status, out = kezek(service, capsys, "dlq", "replay", "--queue", QUEUE)
        assert status == 0
        replayed = int(re.search(r"(\d+) message\(s\) replayed", out).group(1))
        assert replayed >= 1
        wait_for(lambda: cluster.queue.lookup(number)["status"] == "offered", timeout=20,
                 message="the replayed message handled")
    assert mine(service, capsys, message["event_id"]) == []
    assert wait_for(lambda: metric(service, "kezek_dead_letter_messages") <= depth - 1,
                    timeout=10, message="the dead-letter gauge down by one")
