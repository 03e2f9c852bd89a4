"""Every service's /metrics during a run, each service its own process: after real work through
the gateway (a filing, a release that issues a direction), a redelivered event, a poison event
and an event that keeps failing, each metric the operators' dashboard reads is there with a
value that fits what happened."""

from __future__ import annotations

import copy
import re
import time
import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from services.common.amqp import ConfirmingPublisher
from services.common.db import get_engine
from services.gateway.routes import ROUTES
from tests.helpers import wait_for
from tests.ops.scenario import release_flow

EVENT_SERVICES = ("registry", "applications", "queue", "allocation")
RELAY_SERVICES = ("registry", "applications", "queue", "allocation", "audit")


def scrape(url: str) -> list[tuple[str, dict, float]]:
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(r.text) for s in family.samples]


def value(samples, name: str, **labels) -> float | None:
    """Sum of the samples of that name whose labels include ``labels``; None if there are none."""
    found = [v for n, ls, v in samples
             if n == name and all(ls.get(k) == want for k, want in labels.items())]
    return sum(found) if found else None


def delta(after, before, name: str, **labels) -> float:
    """How much a counter grew between two scrapes (a series that did not exist counts 0)."""
    return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)


def publish(cluster, exchange: str, routing_key: str, body) -> None:
    publisher = ConfirmingPublisher(cluster.amqp_uri)
    try:
        publisher.publish_batch([(exchange, routing_key, body, {})])
    finally:
        publisher.close()


def test_every_service_exposes_its_metrics_with_sensible_values(ops_cluster, ops_system):
    started = time.time()
    # the package's cluster may have done other work already: counters are compared to this
    before = {s: scrape(ops_cluster.metrics_url(s)) for s in ops_cluster.procs}
    work = release_flow(ops_system, places=2)
    engine = get_engine(ops_cluster.config["DB_URL"])

    # a redelivered place_released: allocation and registry have handled it, so both skip it
    with engine.connect() as conn:
        released = conn.execute(text(
            "SELECT payload FROM allocation.outbox WHERE routing_key = 'place_released' "
            "AND payload->'data'->>'place_id' = :p"), {"p": work.place_ids[0]}).scalar_one()
    publish(ops_cluster, "allocation.events", "place_released", released)
    # a poison message: not an envelope at all, dead-lettered at once by both handlers
    publish(ops_cluster, "allocation.events", "place_released", {"hello": "world"})
    # a well-formed event the registry cannot apply (organisation id is not a number): tried
    # HANDLER_MAX_ATTEMPTS times, then dead-lettered
    broken = copy.deepcopy(released)
    broken.update(event_id=str(uuid.uuid4()), event_type="organization_changed",
                  source="registry", data={"organization_id": "not-a-number", "revision": 1,
                                           "organization": {}})
    publish(ops_cluster, "registry.events", "organization_changed", broken)

    auditor = work.sessions["auditor"]
    r = auditor.get(ops_system.url("/api/v1/audit/verify"))
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True

    metrics = {}

    def settled():
        metrics.update({s: scrape(ops_cluster.metrics_url(s)) for s in ops_cluster.procs})
        m = metrics
        return (
            delta(m["allocation"], before["allocation"], "kezek_messages_consumed_total",
                  outcome="duplicate")
            and delta(m["registry"], before["registry"], "kezek_messages_consumed_total",
                      handler="on_place_released", outcome="duplicate")
            and delta(m["allocation"], before["allocation"], "kezek_messages_consumed_total",
                      outcome="dead_lettered")
            and delta(m["registry"], before["registry"], "kezek_messages_consumed_total",
                      handler="on_organization_changed", outcome="dead_lettered")
            and all(value(m[s], "kezek_messages_in_progress") == 0 for s in EVENT_SERVICES)
            and all(value(m[s], "kezek_outbox_pending") == 0 for s in RELAY_SERVICES)
        )

    wait_for(settled, timeout=30, interval=0.5, message="metrics to show the work")
    now = time.time()

    for service in EVENT_SERVICES:
        m = metrics[service]
        b = before[service]
        assert delta(m, b, "kezek_messages_consumed_total", service=service, outcome="ok") > 0
        # every outcome is a series from the start, so rate() sees the first failure
        for outcome in ("retried", "dead_lettered", "duplicate"):
            assert value(m, "kezek_messages_consumed_total", outcome=outcome) is not None
        assert delta(m, b, "kezek_message_handling_seconds_count", service=service) > 0
        assert delta(m, b, "kezek_message_handling_seconds_sum", service=service) > 0
        assert value(m, "kezek_messages_in_progress", service=service) == 0
        assert started <= value(m, "kezek_last_processed_timestamp_seconds",
                                service=service) <= now + 1

    for service in RELAY_SERVICES:
        m = metrics[service]
        assert value(m, "kezek_outbox_pending", service=service) == 0
        assert 0 <= value(m, "kezek_outbox_oldest_pending_age_seconds", service=service) < 60
        assert value(m, "kezek_publish_confirm_failures_total", service=service) == 0
    for service in EVENT_SERVICES:
        assert delta(metrics[service], before[service], "kezek_outbox_published_total",
                     service=service) > 0

    # the redelivered event, the poison one and the failing one, where they were handled
    alloc, reg = metrics["allocation"], metrics["registry"]
    b_alloc, b_reg = before["allocation"], before["registry"]
    consumed = "kezek_messages_consumed_total"
    assert delta(alloc, b_alloc, consumed, handler="on_place_released", outcome="duplicate") == 1
    assert delta(reg, b_reg, consumed, handler="on_place_released", outcome="duplicate") == 1
    assert delta(alloc, b_alloc, consumed, outcome="dead_lettered") == 1
    assert delta(reg, b_reg, consumed, handler="on_organization_changed",
                 outcome="retried") == ops_cluster.config["KEZEK"]["HANDLER_MAX_ATTEMPTS"] - 1
    assert delta(reg, b_reg, consumed, handler="on_organization_changed",
                 outcome="dead_lettered") == 1
    # the poison message (to two handlers) and the failing one wait in the dead-letter queue
    assert delta(reg, b_reg, "kezek_dead_letter_messages") == 3

    # RPC calls by method and outcome, with their duration
    def calls(service: str, method: str, name: str = "kezek_rpc_calls_total", **labels):
        return delta(metrics[service], before[service], name, method=method, **labels)

    assert calls("allocation", "release_places", outcome="ok") == 1
    assert calls("allocation", "release_places", "kezek_rpc_duration_seconds_count") == 1
    assert calls("applications", "file_application", outcome="ok") == 1
    # two places released together: allocation may reserve them in one call of the batch
    assert (calls("queue", "reserve_next", outcome="ok")
            + calls("queue", "reserve_next_many", outcome="ok")) >= 1
    assert calls("registry", "create_organization", outcome="ok") == 1

    # the gateway: requests by route template and status, and their latency
    gw, b_gw = metrics["gateway"], before["gateway"]
    releases = "/api/v1/organizations/{id}/groups/{group_id}/releases"
    assert delta(gw, b_gw, "kezek_http_requests_total", route=releases, status="201") == 1
    assert delta(gw, b_gw, "kezek_http_requests_total", route="/api/v1/applications",
                 status="201") == 1
    assert delta(gw, b_gw, "kezek_http_request_duration_seconds_count", route=releases) == 1
    assert delta(gw, b_gw, "kezek_http_request_duration_seconds_sum", route=releases) > 0
    routes = {n_ls[1]["route"] for n_ls in gw if n_ls[0] == "kezek_http_requests_total"}
    assert routes <= {r.label for r in ROUTES}  # templates, never a concrete id
    assert not any(re.search(r"/\d+(/|$)", r) for r in routes)

    # the audit service: its chain verified just now, the records stored
    audit = metrics["audit"]
    assert started <= value(audit, "kezek_audit_chain_last_verified_timestamp_seconds") <= now + 1
    assert delta(audit, before["audit"], "kezek_audit_records_stored_total") > 0
    assert delta(audit, before["audit"], consumed, service="audit", outcome="ok") > 0

    # the gateway's own port serves the same registry as its metrics port
    r = requests.get(ops_system.url("/metrics"), timeout=10)
    assert r.status_code == 200 and "kezek_http_requests_total" in r.text
