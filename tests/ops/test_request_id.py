"""One request id from the gateway to the end: the id the gateway answers in X-Request-Id is on
its access log line, on the log lines of the services its RPC calls and the resulting events
reach, in the envelopes of those events and on the audit record."""

from __future__ import annotations

from sqlalchemy import text

from services.common.db import get_engine
from tests.helpers import wait_for
from tests.ops.conftest import json_lines
from tests.ops.scenario import release_flow


def test_the_gateways_request_id_travels_through_rpc_calls_events_and_logs(ops_cluster,
                                                                          ops_system):
    work = release_flow(ops_system, places=1)
    filed, released = work.request_ids["file_application"], work.request_ids["release_places"]
    assert filed != released

    def lines_with(request_id: str) -> dict[str, list[dict]]:
        return {label: [e for e in json_lines(path) if e.get("request_id") == request_id]
                for label, path in ops_cluster.logs.items()}

    # filing: gateway -> applications (RPC) -> application_filed -> queue (event)
    def filing_logged():
        found = lines_with(filed)
        return found if found["gateway"] and found["applications"] and found["queue"] else None

    found = wait_for(filing_logged, timeout=15, interval=0.2, message="filing's log lines")
    (access,) = [e for e in found["gateway"] if e["logger"] == "kezek.access"]
    assert access["route"] == "/api/v1/applications" and access["status"] == 201
    assert any(e.get("method") == "file_application" for e in found["applications"])
    assert any(e.get("method") == "on_application_filed" for e in found["queue"])

    # release: gateway -> allocation (RPC) -> place_released -> allocation (event) -> queue
    # (RPC reserve_next) -> direction_issued -> registry, applications, queue (events)
    expected = {"allocation": {"release_places", "on_place_released"},
                "queue": {"reserve_next", "on_direction_issued"},
                "registry": {"on_place_released", "on_direction_issued"},
                "applications": {"on_direction_issued"}}

    def release_logged():  # every handler's line, not just the first line of each service
        found = lines_with(released)
        methods = {label: {e.get("method") for e in lines} for label, lines in found.items()}
        return (found, methods) if found["gateway"] and all(
            want <= methods[s] for s, want in expected.items()) else None

    found, _ = wait_for(release_logged, timeout=15, interval=0.2,
                        message=f"the release's log lines from {expected}")
    # no line of another request carries it
    assert not found["audit"] or all(e["request_id"] == released for e in found["audit"])

    # the envelopes of the events those requests caused
    with get_engine(ops_cluster.config["DB_URL"]).connect() as conn:
        def request_ids(schema: str, kind: str, key: str, value: str) -> set:
            return set(conn.execute(text(
                f"SELECT payload->>'request_id' FROM {schema}.outbox "
                f"WHERE routing_key = :k AND payload->'data'->>'{key}' = :v"),
                {"k": kind, "v": value}).scalars())

        number = work.application_number
        assert request_ids("applications", "application_filed", "application_number",
                           number) == {filed}
        # entered the queue (filing), then offered the place (release): never without an id
        assert request_ids("queue", "queue_entry_changed", "application_number",
                           number) == {filed, released}
        assert request_ids("allocation", "place_released", "place_id",
                           work.place_ids[0]) == {released}
        assert request_ids("allocation", "direction_issued", "number",
                           work.direction_number) == {released}

    # and the audit record of the request
    auditor = work.sessions["auditor"]

    def audited():
        r = auditor.get(ops_system.url("/api/v1/audit"), params={"request_id": filed})
        return r.json()["items"] if r.status_code == 200 else None

    (record,) = wait_for(audited, timeout=10, interval=0.2, message="audit record")
    assert record["action"] == "POST /api/v1/applications"
