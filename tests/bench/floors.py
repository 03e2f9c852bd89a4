"""Benchmark floors (not a test): what the machine gives before Kezek adds anything.

    .venv/bin/python tests/bench/floors.py [--n 1000]

1. raw pika: a persistent message published to a quorum queue and confirmed, then consumed and
   acknowledged, one at a time (the least an event costs end to end);
2. raw psycopg: a one-row INSERT and COMMIT per transaction (the least a state change costs);
3. Nameko: an empty RPC round trip to a service in another process (the least a call costs);
4. the gateway: GET /healthz, which makes no RPC (the least an HTTP request costs).

The other benchmarks name these floors; `make bench` prints every figure next to its floor.
Runs in a database and vhost of its own.
"""

import eventlet

eventlet.monkey_patch()  # before pika, kombu and psycopg import socket

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC, as in the services)
from tests.bench.common import (Figure, Services, emit, isolated, median, percentile,  # noqa: E402
                                rpc_proxy)

WORKLOAD = "floor"


def pika_roundtrip(config: dict, n: int) -> list[float]:
    """Milliseconds per publish (persistent, confirmed) + consume + ack."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(config["AMQP_URI"]))
    try:
        channel = connection.channel()
        queue = "bench.floor." + uuid.uuid4().hex[:8]
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=1)
        received = []
        channel.basic_consume(queue, lambda ch, method, props, body: (
            received.append(body), ch.basic_ack(method.delivery_tag)))
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        body = b'{"event_type": "floor", "data": {"n": 0}}'
        times = []
        for _ in range(n):
            start = time.perf_counter()
            channel.basic_publish("", queue, body, props, mandatory=True)
            want = len(received) + 1
            while len(received) < want:
                connection.process_data_events(time_limit=1)
            times.append((time.perf_counter() - start) * 1000)
        channel.queue_delete(queue)
    finally:
        connection.close()
    return times


def psycopg_commit(config: dict, n: int) -> list[float]:
    """Milliseconds per one-row INSERT + COMMIT (psycopg 3, no SQLAlchemy)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(config["DB_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, at timestamptz "
                     "NOT NULL DEFAULT clock_timestamp(), payload text)")
        conn.commit()
        times = []
        for i in range(n):
            start = time.perf_counter()
            conn.execute("INSERT INTO bench_floor (payload) VALUES (%s)", (f"row {i}",))
            conn.commit()
            times.append((time.perf_counter() - start) * 1000)
        conn.execute("DROP TABLE bench_floor")
        conn.commit()
    return times


def rpc_roundtrip(config: dict, n: int) -> list[float]:
    with rpc_proxy(config) as rpc:
        for _ in range(50):  # warm up
            rpc.bench_echo.ping()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            rpc.bench_echo.ping()
            times.append((time.perf_counter() - start) * 1000)
    return times


def gateway_healthz(base_url: str, n: int) -> list[float]:
    import requests

    session = requests.Session()
    for _ in range(50):
        session.get(base_url + "/healthz", timeout=10).raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        session.get(base_url + "/healthz", timeout=10).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float], what: str) -> None:
    emit(Figure(WORKLOAD, name + "_ms", median(times), "ms", note=f"{what}; median of "
                f"{len(times)}, p99 {percentile(times, 99):.3f} ms"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    with isolated() as config:
        times = pika_roundtrip(config, args.n)
        report("pika_roundtrip", times, "raw pika, persistent + confirm + consume + ack")
        emit(Figure(WORKLOAD, "pika_roundtrip_per_s", len(times) / (sum(times) / 1000),
                    "msg/s", note="one at a time"))
        times = psycopg_commit(config, args.n)
        report("psycopg_commit", times, "raw psycopg, one-row INSERT + COMMIT")
        emit(Figure(WORKLOAD, "psycopg_commit_per_s", len(times) / (sum(times) / 1000),
                    "tx/s", note="one at a time"))
        services = Services(config, ["bench_echo", "gateway"],
                            extra_modules={"bench_echo": "tests.bench._echo"})
        with services:
            times = rpc_roundtrip(config, args.n)
            report("rpc_roundtrip", times, "Nameko, empty RPC, service in another process")
            emit(Figure(WORKLOAD, "rpc_roundtrip_per_s", len(times) / (sum(times) / 1000),
                        "calls/s", note="one caller, sequential"))
            times = gateway_healthz("http://" + config["WEB_SERVER_ADDRESS"], args.n)
            report("gateway_healthz", times, "GET /healthz over HTTP keep-alive, no RPC")


if __name__ == "__main__":
    main()
