"""End to end through the services' RPC (registry, applications, queue, allocation on real
RabbitMQ and PostgreSQL): each public registry changes with the event that should change it:
a release, an allocation, an enrolment, a decline, a withdrawal, a stop-list entry. Every
change reaches the registry only through the source service's events.
"""

import copy
import datetime as dt
import random
import uuid
from zoneinfo import ZoneInfo

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.allocation.service import AllocationService
from services.applications.domain import make_iin
from services.applications.service import ApplicationsService
from services.common.errors import NotFound
from services.queue.service import QueueService
from services.registry.service import RegistryService
from tests.helpers import random_name, wait_for

OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}
TODAY = dt.date.today()
BIRTH_DATE = dt.date(TODAY.year - 3, 5, 17)


def applicant() -> dict:
    phone = "+7" + "".join(random.choices("0123456789", k=10))
    return {"id": f"applicant:{phone}", "role": "applicant", "organization_id": None,
            "request_id": str(uuid.uuid4()), "phone": phone}


def child_iin() -> str:
    while True:
        try:
            return make_iin(BIRTH_DATE, random.choice("MF"), random.randint(0, 9999))
        except ValueError:
            continue


@pytest.fixture
def cluster(kezek_config, start_services):
    config = copy.deepcopy(kezek_config)
    # a claim right after the vacancy opens is not pooled for long; timers tick fast
    config["KEZEK"].update({"CLAIM_POOL_MINUTES": 0.001, "ALLOCATION_TIMER_SECONDS": 0.2})
    start_services(RegistryService, ApplicationsService, QueueService, AllocationService,
                   config=config)
    with ClusterRpcProxy(config, timeout=30) as proxy:
        yield proxy


class Region:
    def __init__(self, rpc):
        self.rpc = rpc
        self.district = random_name("district")
        self.org = rpc.registry.create_organization({
            "name": random_name("Балапан"), "address": "Абай 1", "district": self.district,
            "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
            "monthly_fee_kzt": 0}, OFFICER)["id"]
        self.group = rpc.registry.add_group(self.org, {
            "name": "Күншуақ", "group_type": "general", "birth_year": BIRTH_DATE.year,
            "language": "kk", "capacity": 10, "enrolled": 2}, OFFICER)["id"]
        self.staff = {"id": f"staff:{uuid.uuid4().hex[:8]}", "role": "staff",
                      "organization_id": self.org, "request_id": None}
        self.queue_name = f"{self.district}/general/{BIRTH_DATE.year}"
        self.parents: dict[str, dict] = {}

    def file(self, surname: str) -> str:
        parent = applicant()
        filed = self.rpc.applications.file_application({
            "applicant": {"iin": "900101301233", "full_name": f"{surname} Серік Болатұлы",
                          "phone": parent["phone"]},
            "child": {"iin": child_iin(), "full_name": f"{surname}а Айгерім Серікқызы",
                      "birth_date": BIRTH_DATE.isoformat()},
            "queue_type": "general", "language": "kk", "district": self.district,
            "preferred_organizations": [self.org],
            "desired_start": (TODAY + dt.timedelta(days=200)).isoformat(), "benefit": None,
        }, parent)
        self.parents[filed["application_number"]] = parent
        return filed["application_number"]

    # what the public registries show
    def lookup(self, number: str) -> dict | None:
        try:
            return self.rpc.registry.queue_lookup(number)
        except NotFound:
            return None

    def queue(self) -> dict[str, dict]:
        rows = self.rpc.registry.list_queue({"queue_name": self.queue_name}, 1, 50)["items"]
        return {r["application_number"]: r for r in rows}

    def releases(self) -> list[dict]:
        return self.rpc.registry.list_releases({"organization_id": self.org}, 1, 50)["items"]

    def vacancies(self) -> list[dict]:
        return self.rpc.registry.list_vacancies({"organization_id": self.org}, 1, 50)["items"]

    def directions(self) -> dict[str, dict]:
        rows = self.rpc.registry.list_directions({"organization_id": self.org}, 1, 50)["items"]
        return {d["number"]: d for d in rows}

    def enrolled(self) -> int:
        [group] = self.rpc.registry.get_organization(self.org)["groups"]
        return group["enrolled"]

    def status(self, number: str, status: str) -> dict:
        return wait_for(lambda: (row := self.lookup(number)) and row["status"] == status and row,
                        message=f"{number} {status} in the queue lookup")


def test_each_registry_follows_the_event_that_changes_it(cluster):
    r = Region(cluster)

    # a release: the protocol gets a row and, nobody being in the queue, a public vacancy
    [first_place] = cluster.allocation.release_places(r.org, r.group, 1, r.staff)["place_ids"]
    [release] = wait_for(r.releases, message="release protocol row")
    assert (release["place_id"], release["group_name"], release["birth_year"],
            release["language"]) == (first_place, "Күншуақ", BIRTH_DATE.year, "kk")
    assert release["released_date"] and release["priority_ends_at"]
    # listed from its release on; nobody chose it, so it is an open vacancy at once
    [vacancy] = wait_for(lambda: [v for v in r.vacancies() if not v["in_priority_period"]],
                         message="the open vacancy listed")
    assert vacancy["place_id"] == first_place and len(r.vacancies()) == 1

    numbers = [r.file(s) for s in ("Ахметов", "Беков", "Жұмабаев", "Сейітов", "Оспанов")]
    a, b, c, d, e = numbers
    for number in numbers:
        r.status(number, "queued")
    assert [r.queue()[n]["queue_number"] for n in numbers] == [1, 2, 3, 4, 5]

    # an allocation: A claims the vacancy; the directions protocol shows it, the vacancy goes
    cluster.allocation.claim_vacancy(first_place, a, r.parents[a])
    [issued] = wait_for(lambda: list(r.directions().values()), message="direction in protocol")
    assert (issued["type"], issued["status"], issued["child_name"]) == \
        ("vacancy", "issued", "Ахметова А.С.")
    assert "application_number" not in issued
    wait_for(lambda: r.vacancies() == [], message="the vacancy gone")
    assert r.status(a, "offered")["queue_number"] == 1

    # an enrolment: the direction is enrolled, the group has one child more, A is provided
    cluster.allocation.enroll(issued["number"], r.staff)
    wait_for(lambda: r.directions()[issued["number"]]["status"] == "enrolled",
             message="direction enrolled")
    wait_for(lambda: r.enrolled() == 3, message="group enrolled 2 -> 3")
    provided = r.status(a, "provided")
    assert (provided["provided"], provided["queue_number"]) == (True, None)

    # a decline: B gets the next release, declines; the place is released again (a second
    # protocol row for it) and goes to C; B is stop-listed with the reason
    [second_place] = cluster.allocation.release_places(r.org, r.group, 1, r.staff)["place_ids"]
    r.status(b, "offered")
    [to_b] = wait_for(lambda: [x for x in r.directions().values()
                               if x["place_id"] == second_place], message="direction to B")
    assert (to_b["type"], to_b["child_name"]) == ("priority", "Бекова А.С.")
    cluster.allocation.decline(to_b["number"], r.parents[b])
    wait_for(lambda: r.directions()[to_b["number"]]["status"] == "declined",
             message="direction declined")
    declined = r.status(b, "stop_listed")
    assert declined["stop_list_reason"] == "direction_declined"
    assert declined["stop_list_entered_on"] == \
        dt.datetime.now(ZoneInfo("Asia/Almaty")).date().isoformat()
    wait_for(lambda: [x["place_id"] for x in r.releases()].count(second_place) == 2,
             message="the declined place released again")
    r.status(c, "offered")
    to_c = wait_for(lambda: [x for x in r.directions().values()
                             if x["place_id"] == second_place and x["status"] == "issued"],
                    message="the place directed to C")
    assert to_c[0]["child_name"] == "Жұмабаева А.С."

    # a withdrawal: D leaves the queue registry and E moves up one
    assert r.queue()[e]["queue_number"] == 4  # B (stop-listed), C (offered), D, E
    cluster.applications.withdraw(d, r.parents[d])
    assert r.status(d, "withdrawn")["queue_number"] is None
    queue = wait_for(lambda: (q := r.queue()) and d not in q and q, message="D unlisted")
    assert [queue[n]["queue_number"] for n in (b, c, e)] == [1, 2, 3]

    # a stop-list entry: the lookup shows it with its reason; E keeps its place in the order
    cluster.queue.stop_list_enter(e, "documents_check", None, OFFICER)
    stopped = r.status(e, "stop_listed")
    assert (stopped["stop_list_reason"], stopped["queue_number"]) == ("documents_check", 3)
    assert stopped["stop_list_entered_on"] and stopped["stop_list_exits_on"] is None
    assert r.queue()[e]["status"] == "stop_listed"
