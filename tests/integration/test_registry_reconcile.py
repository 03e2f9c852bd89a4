"""``kezek registry reconcile`` against the running registry, queue and allocation services:
the read models agree with the sources after real work; rows tampered with in SQL are reported
one line each; ``--repair`` puts them right and a second run finds nothing.

Reconcile looks at whole read models, so this module runs in a database and vhost of its own:
rows other test modules publish straight to the registry (with no source behind them) would
otherwise count as extra.
"""

import datetime as dt
import json
import uuid

import eventlet
import pytest
import yaml
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

from services import cli
from services.allocation.service import AllocationService
from services.common.db import get_engine
from services.common.errors import BadInput, NotFound
from services.queue.service import QueueService
from services.registry import reconcile
from services.registry.service import RegistryService
from tests.conftest import destroy_isolated_config, make_isolated_config
from tests.helpers import random_name, wait_for

OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}
T0 = dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def own_config():
    config = make_isolated_config()
    yield config
    destroy_isolated_config(config)


@pytest.fixture
def cluster(own_config, start_services):
    start_services(RegistryService, QueueService, AllocationService, config=own_config)
    with ClusterRpcProxy(own_config, timeout=30) as proxy:
        yield proxy


@pytest.fixture
def config_file(own_config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(own_config, allow_unicode=True))
    return str(path)


def run_cli(config_file, capsys, *args) -> tuple[int, list[str]]:
    code = cli.main(["--config", config_file, "registry", "reconcile", "--settle", "1", *args])
    return code, capsys.readouterr().out.strip().splitlines()


class Kindergarten:
    """One organisation with a group, and children in its district's queue who chose it."""

    def __init__(self, rpc):
        self.rpc = rpc
        self.tag = uuid.uuid4().hex[:6].upper()
        self.district = random_name("district")
        self.org = rpc.registry.create_organization({
            "name": random_name("Балапан"), "address": "Абай 1", "district": self.district,
            "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
            "monthly_fee_kzt": 0}, OFFICER)["id"]
        self.group = rpc.registry.add_group(self.org, {
            "name": "Күншуақ", "group_type": "general", "birth_year": 2022, "language": "kk",
            "capacity": 20, "enrolled": 0}, OFFICER)["id"]
        self.staff = {"id": f"staff:{self.tag}", "role": "staff", "organization_id": self.org,
                      "request_id": None}

    def enqueue(self, n: int) -> str:
        number = f"AR{self.tag}-{n:04d}"
        self.rpc.queue.enqueue({
            "application_number": number, "applicant_name": f"Ахметов Арман {n}",
            "child_name": f"Ахметова Дана {n}", "child_birth_date": "2022-05-01",
            "birth_year": 2022, "queue_type": "general", "language": "kk",
            "district": self.district, "preferred_organizations": [self.org],
            "desired_start": "2026-09-01", "filed_at": (T0 + dt.timedelta(minutes=n)).isoformat(),
            "benefit": None, "current_organization_id": None, "current_group_id": None,
            "applicant_id": f"applicant:+7701{self.tag}{n:03d}"})
        return number

    def release(self, places: int) -> list[str]:
        return self.rpc.allocation.release_places(self.org, self.group, places,
                                                  self.staff)["place_ids"]

    def directions(self) -> list[dict]:
        return self.rpc.registry.list_directions({"organization_id": self.org}, 1, 50)["items"]


def lookup(rpc, number: str) -> dict | None:
    try:
        return rpc.registry.queue_lookup(number)
    except NotFound:
        return None


def test_exports_page_through_every_snapshot(cluster):
    k = Kindergarten(cluster)
    numbers = [k.enqueue(n) for n in range(5)]

    seen, after = [], None
    while True:
        page = cluster.queue.export_entries(after, 2)
        seen.extend(i["application_number"] for i in page["items"])
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == sorted(set(seen)) and set(numbers) <= set(seen)
    mine = cluster.queue.export_entries(None, 1, [numbers[3], "A-unknown", numbers[1]])["items"]
    assert sorted(i["application_number"] for i in mine) == [numbers[1], numbers[3]]
    assert {i["revision"] for i in mine} == {1} and mine[0]["status"] == "queued"
    with pytest.raises(BadInput) as err:
        cluster.queue.export_entries(None, 0)
    assert err.value.field == "limit"

    [place_id] = k.release(1)
    wait_for(lambda: k.directions(), message="a direction")
    [place] = cluster.allocation.export_places(None, 1, [place_id])["items"]
    assert (place["place_id"], place["status"]) == (place_id, "directed")
    [direction] = cluster.allocation.export_directions(None, 1,
                                                       [place["direction_number"]])["items"]
    assert direction["application_number"] == numbers[0]
    [release] = cluster.allocation.export_releases(0, 1, [place_id])["items"]
    assert (release["place_id"], release["revision"], release["release_kind"]) == \
        (place_id, 1, "staff")
    with pytest.raises(BadInput) as err:
        cluster.allocation.export_places("not-a-place", 10)
    assert err.value.field == "place_id"


def test_reconcile_reports_tampered_rows_and_repair_restores_them(cluster, own_config,
                                                                 config_file, capsys):
    k = Kindergarten(cluster)
    numbers = [k.enqueue(n) for n in range(1, 6)]
    places = k.release(3)
    # the three children first in the queue get the places; one of them is enrolled
    wait_for(lambda: len(k.directions()) == 3, message="three directions republished")
    first = next(d for d in k.directions() if d["status"] == "issued")
    child = cluster.allocation.get_direction(first["number"])["child_name"]
    cluster.allocation.enroll(first["number"], k.staff)
    wait_for(lambda: any(d["status"] == "enrolled" for d in k.directions()),
             message="the enrolment republished")
    wait_for(lambda: [cluster.registry.queue_lookup(n)["status"] for n in numbers].count(
        "offered") == 2, message="offers republished")

    code, lines = run_cli(config_file, capsys)
    assert (code, lines) == (0, ["0 differences (queue 0, places 0, directions 0, releases 0)"])

    engine = get_engine(own_config["DB_URL"])
    last, tampered_place, lost_release = numbers[-1], places[1], places[2]
    [source_place] = cluster.allocation.export_places(None, 1, [tampered_place])["items"]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM registry.queue_entries WHERE application_number = :n"),
                     {"n": last})
        conn.execute(text("UPDATE registry.places SET status = 'vacancy' "
                          "WHERE place_id = CAST(:p AS jsonb)"), {"p": json.dumps(tampered_place)})
        conn.execute(text("UPDATE registry.directions SET child_name = 'Подменённая Д.' "
                          "WHERE number = :d"), {"d": first["number"]})
        conn.execute(text("DELETE FROM registry.releases WHERE place_id = CAST(:p AS jsonb)"),
                     {"p": json.dumps(lost_release)})
        conn.execute(text(
            "INSERT INTO registry.queue_entries (application_number, revision, queue_name, "
            "district, queue_type, birth_year, language, status, filed_at, applicant_name, "
            "child_name, republished_at) SELECT :n, 1, queue_name, district, queue_type, "
            "birth_year, language, 'queued', filed_at, 'Жоқ Ж.', 'Жоқ Ж.', now() "
            "FROM registry.queue_entries WHERE application_number = :like"),
            {"n": f"AR{k.tag}-9999", "like": numbers[0]})

    code, lines = run_cli(config_file, capsys)
    assert code == 1
    assert sorted(lines[:-1]) == sorted([
        f"queue {last}: missing from the registry (source revision 1)",
        f"queue AR{k.tag}-9999: extra in the registry (the source has no such row)",
        f"places {tampered_place}: differs: status registry='vacancy' "
        f"source='{source_place['status']}'",
        f"directions {first['number']}: differs: child_name registry='Подменённая Д.' "
        f"source='{child}'",
        f"releases {lost_release}@1: missing from the registry (source revision 1)",
    ])
    assert lines[-1] == "5 differences (queue 2, places 1, directions 1, releases 1)"

    code, lines = run_cli(config_file, capsys, "--repair")
    assert code == 0 and lines[-1] == "repaired 5"
    code, lines = run_cli(config_file, capsys)
    assert (code, lines[-1]) == (0, "0 differences (queue 0, places 0, directions 0, releases 0)")

    # what the public sees is back: the lost entry, the protocol row, the real child's name
    assert cluster.registry.queue_lookup(last)["status"] == "queued"
    releases = cluster.registry.list_releases({"organization_id": k.org}, 1, 50)
    assert releases["total"] == 3
    assert {d["child_name"] for d in k.directions()} == {"Ахметова Д."}
    with pytest.raises(NotFound):
        cluster.registry.queue_lookup(f"AR{k.tag}-9999")


def test_reconcile_waits_for_events_in_flight(cluster, own_config):
    """A row whose newer event is still on its way is not a difference once it arrives."""
    k = Kindergarten(cluster)
    number = k.enqueue(1)
    wait_for(lambda: lookup(cluster, number), message="entry republished")
    engine = get_engine(own_config["DB_URL"])
    # the registry lags one revision behind, as if queue_entry_changed were in flight ...
    with engine.begin() as conn:
        conn.execute(text("UPDATE registry.queue_entries SET revision = 0, status = 'offered' "
                          "WHERE application_number = :n"), {"n": number})
    lines = []
    # ... and the next change of the entry arrives while reconcile looks again
    stop_listed = eventlet.spawn_after(0.3, lambda: cluster.queue.stop_list_enter(
        number, "documents_check", None, OFFICER))
    report = reconcile.reconcile(own_config, models=["queue"], settle=5, out=lines.append)
    stop_listed.wait()
    assert report.total == 0, lines
    assert cluster.registry.queue_lookup(number)["stop_list_reason"] == "documents_check"
