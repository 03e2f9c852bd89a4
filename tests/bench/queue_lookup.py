"""Benchmark (not a test): the queue-number lookup and filing one more application, with a
queue of 200,000 applications.

    .venv/bin/python tests/bench/queue_lookup.py [--applications 200000] [--n 2000]

Loads the demo city (``services.demo``, seed 1) into a database of its own, then measures

- at the service (the command functions the entrypoints call, in this process, on the same
  database; no broker): ``queue.commands.lookup`` (the live queue number is an index range
  count) and ``applications.commands.file_application`` with the registry's preference check
  and the queue's enqueue, as the services chain them. Targets (issue 3): lookup median under
  5 ms, filing under 50 ms;
- through the services, each in its own ``nameko run`` process: ``queue.lookup`` and
  ``applications.file_application`` over RPC (file_application calls registry and queue by
  RPC in turn).

Floors: an indexed single-row SELECT by primary key among the same rows (measured here),
the raw psycopg commit and the empty Nameko RPC (tests/bench/floors.py).

The load's event backlog is marked delivered before the services start (see
``tests.bench.common.discard_backlog``): these figures do not read what it builds.
"""

import eventlet

eventlet.monkey_patch()  # before pika, kombu and psycopg import socket

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC)
from tests.bench.common import (Figure, Services, discard_backlog, emit, isolated,  # noqa: E402
                                median, percentile, rpc_proxy, timed)

WORKLOAD = "queue_lookup"
SEED = 1


def applicant(request: dict) -> dict:
    return {"id": f"applicant:{request['applicant']['phone']}", "role": "applicant",
            "organization_id": None, "request_id": None}


def numbers_sample(engine, n: int) -> list[str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        numbers = conn.execute(text(
            "SELECT application_number FROM queue.entries WHERE status IN "
            "('queued', 'offered', 'stop_listed')")).scalars().all()
    return random.Random(2).sample(numbers, min(n, len(numbers)))


def indexed_select_floor(config: dict, numbers: list[str]) -> list[float]:
    """Milliseconds of a primary-key SELECT of one entry, raw psycopg: the floor of a read."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(config["DB_URL"]).set(drivername="postgresql")
    times = []
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        for number in numbers:
            start = time.perf_counter()
            conn.execute("SELECT * FROM queue.entries WHERE application_number = %s",
                         (number,)).fetchone()
            times.append((time.perf_counter() - start) * 1000)
    return times


def figures(name: str, times: list[float], floor: str | None = None,
            floor_value: float | None = None, note: str = "") -> None:
    emit(Figure(WORKLOAD, f"{name}_median_ms", median(times), "ms", floor=floor,
                floor_value=floor_value, note=f"{note}; n={len(times)}"))
    emit(Figure(WORKLOAD, f"{name}_p99_ms", percentile(times, 99), "ms", floor=floor,
                floor_value=None if floor_value is None else floor_value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=2000, help="lookups per measurement")
    parser.add_argument("--filings", type=int, default=300, help="filings per measurement")
    args = parser.parse_args()

    from services import demo
    from services.applications import commands as app_commands
    from services.common.config import settings
    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands as queue_commands
    from services.registry import commands as reg_commands
    from services.registry.domain import RegistrySettings

    with isolated() as config:
        started = time.monotonic()
        summary = demo.load(config, "city", SEED, applications=args.applications,
                            project=False, log=lambda m: print(m, flush=True))
        print(f"loaded {summary['applications']} applications in "
              f"{time.monotonic() - started:.0f} s: {summary['seconds']}", flush=True)
        engine = get_engine(config["DB_URL"])
        queue_db = DatabaseAccess(engine, "queue")
        apps_db = DatabaseAccess(engine, "applications")
        registry_db = DatabaseAccess(engine, "registry")
        reg_settings = RegistrySettings.from_settings(settings(config))
        numbers = numbers_sample(engine, args.n)
        requests = demo.sample_requests(config, "city", SEED, 2 * args.filings + 100)

        floor = indexed_select_floor(config, numbers)
        figures("indexed_select", floor, note="raw psycopg, primary-key SELECT, floor of a read")
        floor_ms = median(floor)

        # -- at the service: the commands the entrypoints call ---------------------------------
        for number in numbers[:200]:
            queue_commands.lookup(queue_db, number)  # warm up
        times = [timed(queue_commands.lookup, queue_db, n)[0] for n in numbers]
        figures("service_lookup", times, floor="indexed select (here)", floor_value=floor_ms,
                note="queue.commands.lookup: entry + live queue number (target median < 5 ms)")

        def check(ids, birth_year, language, queue_type):
            return reg_commands.check_preferences(registry_db, ids, birth_year, language,
                                                  queue_type, reg_settings)

        def enqueue(entry):
            return queue_commands.enqueue(queue_db, entry)

        times = []
        for request in requests[:args.filings]:
            ms, result = timed(app_commands.file_application, apps_db, request,
                               applicant(request), check_preferences=check, enqueue=enqueue)
            assert result["queue_number"], result
            times.append(ms)
        figures("service_filing", times, floor="psycopg_commit_ms",
                note="file_application + registry check + queue enqueue, one process "
                     "(target median < 50 ms)")

        # -- through the services over RPC -------------------------------------------------------
        discarded = discard_backlog(config)
        print(f"event backlog marked delivered (benchmark shortcut): {discarded}", flush=True)
        with Services(config, ["registry", "applications", "queue"]) as running:
            with rpc_proxy(config) as rpc:
                for number in numbers[:200]:
                    rpc.queue.lookup(number)
                times = [timed(rpc.queue.lookup, n)[0] for n in numbers]
                figures("rpc_lookup", times, floor="rpc_roundtrip_ms",
                        note="queue.lookup over RPC, queue service in its own process")
                times = []
                for request in requests[args.filings:2 * args.filings]:
                    ms, result = timed(rpc.applications.file_application, request,
                                       applicant(request))
                    times.append(ms)
                figures("rpc_filing", times, floor="rpc_roundtrip_ms",
                        note="applications.file_application over RPC (+ registry and queue "
                             "RPC inside)")
            rss = running.peak_rss()
        print("peak RSS (MiB): " + ", ".join(f"{k} {v['peak'] / 1024:.0f}"
                                             for k, v in rss.items()), flush=True)


if __name__ == "__main__":
    main()
