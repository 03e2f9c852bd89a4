"""Benchmark (not a test): how the release storm and the queue-number lookup change as the
queue grows from 50,000 to 200,000 to 800,000 applications.

    .venv/bin/python tests/bench/growth.py [--sizes 50000,200000,800000] [--places 300]

One database of its own holds the demo *country* (``services.demo``, scale country: 20
regions, about 3,000 organisations): its applications are loaded in parts (50,000, then
150,000 more, then 600,000 more), so each size is the same region with a longer queue. At each
size, with every service but the gateway running in its own ``nameko run`` process:

- the queue-number lookup: ``queue.lookup`` over RPC, and the command it calls in this process
  (median and p99 of 1,000 random applications still in the queue);
- the release storm: staff of ``--places`` different groups that have children waiting each
  release one place, ten callers at once (``allocation.release_places`` over RPC); the
  allocation rate is directions issued a second, from the first release to the last direction
  (database clock);
- each service's peak resident memory (VmHWM) from its start at this size to the end of the
  storm.

The figures at the largest size are printed against those at the smallest (ratio = growth
factor; the goal is allocation rate and lookup latency within a factor of 2). The load's
event backlog is marked delivered before the services start (tests.bench.common
.discard_backlog): the storm and the lookup do not read the registry's queue read model.
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

SEED = 1
SERVICES = ["registry", "applications", "queue", "allocation", "audit"]
HANDLER = "allocation.on_place_released"


def sample(engine, n: int, size: int) -> list[str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        numbers = conn.execute(text(
            "SELECT application_number FROM queue.entries WHERE status IN "
            "('queued', 'offered', 'stop_listed')")).scalars().all()
    return random.Random(size).sample(numbers, min(n, len(numbers)))


def storm_groups(engine, places: int, size: int) -> list[tuple[int, int]]:
    """(organisation, group) of groups with a free place and children waiting who chose the
    organisation, none used by an earlier storm; spread over the region."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT g.organization_id, g.id FROM registry.groups g
               WHERE g.group_type = 'general' AND g.capacity > g.enrolled
                 AND NOT EXISTS (SELECT 1 FROM allocation.places p WHERE p.group_id = g.id)
                 AND EXISTS (SELECT 1 FROM queue.candidates c
                             WHERE c.organization_id = g.organization_id
                               AND c.birth_year = g.birth_year AND c.language = g.language
                               AND c.group_kind = 'general')
               ORDER BY md5(g.id::text || :salt) LIMIT :n"""),
            {"salt": str(size), "n": places}).all()
    return [(int(r[0]), int(r[1])) for r in rows]


def release_storm(config: dict, engine, groups: list[tuple[int, int]], callers: int = 10,
                  timeout: float = 600) -> dict:
    from sqlalchemy import text

    with engine.connect() as conn:
        handled_before = conn.execute(text(
            "SELECT count(*) FROM allocation.inbox WHERE handler = :h"), {"h": HANDLER}).scalar()
    tag = f"growth-{time.time_ns()}"

    def release(item):
        org, group = item
        actor = {"id": f"staff:bench-{org}", "role": "staff", "organization_id": org,
                 "request_id": None}
        with rpc_proxy(config, timeout=60) as rpc:
            return rpc.allocation.release_places(org, group, 1, actor,
                                                 idempotency_key=f"{tag}-{group}")

    pool = eventlet.GreenPool(callers)
    started = time.monotonic()
    place_ids = [pid for result in pool.imap(release, groups) for pid in result["place_ids"]]
    released_in = time.monotonic() - started
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            handled = conn.execute(text(
                "SELECT count(*) FROM allocation.inbox WHERE handler = :h"),
                {"h": HANDLER}).scalar() - handled_before
        if handled >= len(place_ids):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {handled} of {len(place_ids)} places allocated after "
                             f"{timeout} s")
        time.sleep(0.1)
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT count(d.number) AS issued, min(p.released_at) AS first_release,
                      max(d.issued_at) AS last_issue,
                      count(*) FILTER (WHERE p.status = 'vacancy') AS vacancies
               FROM allocation.places p LEFT JOIN allocation.directions d
                 ON d.place_id = p.place_id
               WHERE p.place_id = ANY(CAST(:ids AS uuid[]))"""),
            {"ids": place_ids}).one()
    seconds = (row.last_issue - row.first_release).total_seconds() if row.issued else None
    return {"places": len(place_ids), "issued": row.issued, "vacancies": row.vacancies,
            "seconds": seconds, "rate": row.issued / seconds if seconds else 0.0,
            "released_in": released_in}


def measure(config: dict, size: int, places: int, lookups: int) -> dict:
    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands as queue_commands

    engine = get_engine(config["DB_URL"])
    queue_db = DatabaseAccess(engine, "queue")
    numbers = sample(engine, lookups, size)
    for number in numbers[:100]:
        queue_commands.lookup(queue_db, number)
    service_times = [timed(queue_commands.lookup, queue_db, n)[0] for n in numbers]
    discarded = discard_backlog(config)
    print(f"  event backlog marked delivered (benchmark shortcut): {discarded}", flush=True)
    running = Services(config, SERVICES)
    running.start()
    try:
        with rpc_proxy(config) as rpc:
            for number in numbers[:100]:
                rpc.queue.lookup(number)
            rpc_times = [timed(rpc.queue.lookup, n)[0] for n in numbers]
        groups = storm_groups(engine, places, size)
        storm = release_storm(config, engine, groups)
        rss = running.peak_rss()
    finally:
        running.stop()
    return {"size": size, "service_lookup": service_times, "rpc_lookup": rpc_times,
            "storm": storm, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000,800000")
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--scale", default="country", help="the region's shape (demo scale)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes) or len(sizes) > 4:
        raise SystemExit("--sizes: up to 4 growing sizes")

    from services import demo

    results = []
    with isolated() as config:
        loaded = 0
        for part, size in enumerate(sizes):
            started = time.monotonic()
            summary = demo.load(config, args.scale, SEED, applications=size - loaded, part=part,
                                project=False, log=lambda m: print(m, flush=True))
            loaded += summary["applications"] + summary.get("skipped", 0)
            print(f"size {size}: {loaded} applications, loaded {summary['applications']} in "
                  f"{time.monotonic() - started:.0f} s {summary['seconds']}", flush=True)
            result = measure(config, size, args.places, args.lookups)
            result["loaded"] = loaded
            results.append(result)
            storm = result["storm"]
            print(f"size {size}: lookup over RPC median {median(result['rpc_lookup']):.2f} ms, "
                  f"at the service {median(result['service_lookup']):.2f} ms; storm "
                  f"{storm['issued']} directions of {storm['places']} places "
                  f"({storm['vacancies']} vacancies) at {storm['rate']:.1f}/s; peak RSS MiB "
                  + ", ".join(f"{k} {v['peak'] / 1024:.0f}" for k, v in result["rss"].items()),
                  flush=True)

    base = results[0]
    print()
    print("size      lookup RPC ms (p50/p99)  lookup service ms (p50/p99)  allocations/s  "
          "peak RSS MiB (" + ", ".join(SERVICES) + ")")
    for r in results:
        print(f"{r['loaded']:>8,}  {median(r['rpc_lookup']):7.2f} / {percentile(r['rpc_lookup'], 99):6.2f}"
              f"       {median(r['service_lookup']):7.2f} / {percentile(r['service_lookup'], 99):6.2f}"
              f"            {r['storm']['rate']:8.1f}      "
              + " ".join(f"{r['rss'][s]['peak'] / 1024:5.0f}" for s in SERVICES))
    print()
    for r in results:
        workload = f"growth_{r['loaded'] // 1000}k"
        against = r is not base
        floor = f"same at {base['loaded'] // 1000}k" if against else None

        def ref(value_of):
            return value_of(base) if against else None

        emit(Figure(workload, "allocations_per_s", r["storm"]["rate"], "directions/s",
                    floor=floor or "pika_roundtrip_per_s",
                    floor_value=ref(lambda b: b["storm"]["rate"]),
                    note=f"{r['storm']['issued']} of {r['storm']['places']} places"))
        emit(Figure(workload, "rpc_lookup_median_ms", median(r["rpc_lookup"]), "ms",
                    floor=floor or "rpc_roundtrip_ms",
                    floor_value=ref(lambda b: median(b["rpc_lookup"]))))
        emit(Figure(workload, "rpc_lookup_p99_ms", percentile(r["rpc_lookup"], 99), "ms",
                    floor=floor or "rpc_roundtrip_ms",
                    floor_value=ref(lambda b: percentile(b["rpc_lookup"], 99))))
        emit(Figure(workload, "service_lookup_median_ms", median(r["service_lookup"]), "ms",
                    floor=floor, floor_value=ref(lambda b: median(b["service_lookup"]))))
        for service in SERVICES:
            emit(Figure(workload, f"peak_rss_{service}_mib", r["rss"][service]["peak"] / 1024,
                        "MiB", floor=floor,
                        floor_value=ref(lambda b, s=service: b["rss"][s]["peak"] / 1024)))


if __name__ == "__main__":
    main()
