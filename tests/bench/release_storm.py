"""Benchmark (not a test): a release storm of 5,000 places into a queue of 200,000 applications.

    .venv/bin/python tests/bench/release_storm.py [--places 5000] [--rate 150] [--callers 20]
        [--reuse TAG] [--full-catch-up]

1. Loads the demo city (``services.demo``, seed 1: about 600 organisations, 200,000
   applications) into a database and vhost of its own.
2. Starts every service but the gateway, each in its own ``nameko run`` process (at most
   ``--db-connections`` database connections each). The load leaves about 450,000 events in
   the outboxes (application_filed, queue_entry_changed, ...), which take the services far
   longer to work through than the storm itself (``tests/bench/demo_city.py`` measures that
   catch-up). By default they are marked delivered (``tests.bench.common.discard_backlog``):
   the loader has already brought the registry's queue read model up to the queue (as
   ``kezek registry reconcile --repair`` would; see ``services.demo``), so the registry then
   holds every entry, as the events would have made it. ``--full-catch-up`` publishes the
   backlog instead and waits until every outbox is published and every event queue is
   empty. Either way the storm starts with the registry agreeing with queue and allocation,
   and with no backlog.
3. The storm: staff of groups with free places and children waiting who chose their
   organisation release ``--places`` places (a few per call, ``allocation.release_places``
   over RPC, ``--callers`` callers at once), paced at ``--rate`` places a second (0: as
   fast as the callers go). Each place goes through the real path: ``place_released`` ->
   allocation -> ``queue.reserve_next`` -> direction issued -> ``direction_issued`` ->
   registry (the public directions protocol, 05-21).
4. Figures: places allocated a second (directions issued, from the first release to the
   last direction, database clock); the time from each place's release
   (``allocation.places.released_at``) to its direction being in the registry's directions
   protocol (``registry.directions.republished_at``, stamped by the registry's handler in
   the transaction that makes the row visible), median and p95; the same up to the direction
   being issued in allocation; then ``kezek registry reconcile`` (in this process, against
   the running services) and the number of differences it reports (issue 5: zero).

Targets (issue 4): at least 150 places a second on the 2-core machine, p95 under 2 s. At the
default ``--rate 150`` the storm offers the target rate: the allocation rate is then capped
at it and the latency shows whether the services keep up; ``--rate 0`` releases as fast as
the callers can and measures the capacity (the latency then includes waiting in the queue).

Also printed: the CPU time the five service processes, RabbitMQ and PostgreSQL spent on the
storm, per place (what limits the rate on two cores), and each service's peak memory.

``--reuse TAG`` works in the kept database ``kezek_test_TAG`` (and vhost) of an earlier run
with ``KEZEK_KEEP_TEST_DB=1``, to iterate without loading again; each storm releases seats
still free after the earlier ones (and the children they left waiting).
"""

import eventlet

eventlet.monkey_patch()  # before pika, kombu and psycopg import socket

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC)
from tests.bench.common import (Figure, Services, broker_backlog, cpu_seconds,  # noqa: E402
                                discard_backlog, emit, isolated, median, percentile,
                                rpc_proxy, servers_cpu_seconds)

WORKLOAD = "release_storm"
SEED = 1
SERVICES = ["registry", "applications", "queue", "allocation", "audit"]
SCHEMAS = ("registry", "applications", "queue", "allocation")
HANDLER = "allocation.on_place_released"
MAX_PER_CALL = 3  # places one release_places call releases


@contextlib.contextmanager
def reused(tag: str):
    """The config of a database and vhost kept by an earlier run (KEZEK_KEEP_TEST_DB=1)."""
    from sqlalchemy.engine import make_url

    from services.common.config import load_config
    from services.common.db import dispose_engines
    from tests.conftest import free_port

    config = copy.deepcopy(load_config())
    config["DB_URL"] = make_url(config["DB_URL"]).set(
        database=f"kezek_test_{tag}").render_as_string(hide_password=False)
    config["AMQP_URI"] = f"amqp://guest:guest@127.0.0.1:5672/kezek_test_{tag}"
    config["KEZEK"]["METRICS_PORTS"] = {k: 0 for k in config["KEZEK"]["METRICS_PORTS"]}
    config["KEZEK"]["SMS_OUTBOX"] = f"/tmp/kezek-sms-{tag}.jsonl"
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    config["KEZEK_TEST_TAG"] = tag
    config["KEZEK_VHOST"] = vhost = f"kezek_test_{tag}"
    # marked as in use now (tests.leftovers drops unmarked or old ones); the vhost is made
    # again if it is gone, with every queue declared
    from sqlalchemy import text

    from services.common import topology
    from services.common.db import get_engine
    from tests import leftovers
    from tests.conftest import rabbitmqctl

    with get_engine(config["DB_URL"]).connect() as conn:
        conn.execute(text(f"COMMENT ON DATABASE \"kezek_test_{tag}\" IS '{leftovers.mark()}'"))
        conn.commit()
    with contextlib.suppress(Exception):
        rabbitmqctl("add_vhost", vhost, "--description", leftovers.mark())
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    topology.declare_all(config)
    from services.common.migrations import upgrade

    upgrade(config["DB_URL"])
    try:
        yield config
    finally:
        dispose_engines()


def limited(config: dict, connections: int) -> dict:
    """The config with each service process holding at most ``connections`` database
    connections (pool and overflow): five processes at the default 10 + 20 would be 150, past
    PostgreSQL's max_connections of 100 on a machine that runs other tests too ("too many
    clients" then fails handlers). A worker past the limit waits for a connection.

    All of them stay in the pool (no overflow): an overflow connection is closed again after
    each use, and with more workers than pooled connections a storm would open a new
    PostgreSQL backend for every few statements (a fork and a login each)."""
    return {**config, "DB_POOL_SIZE": max(1, connections), "DB_MAX_OVERFLOW": 0}


def cpu_by_process(running: Services) -> dict[str, float]:
    """CPU time (user + system) each service process, RabbitMQ and PostgreSQL have used so
    far (the servers are shared with whatever else runs on the machine)."""
    out = {}
    for name, proc in running.procs.items():
        try:
            out[name] = cpu_seconds(proc.pid)
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    return {**out, **servers_cpu_seconds()}


def backlog(config: dict, engine) -> dict:
    """Unsent outbox rows per schema, messages waiting in event and audit queues, and dead
    letters."""
    from sqlalchemy import text

    out = {}
    with engine.connect() as conn:
        for schema in SCHEMAS:
            out[schema] = conn.execute(text(
                f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")).scalar()
    return {**out, **broker_backlog(config)}


def catch_up(config: dict, engine, running: Services, timeout: float) -> float:
    """Wait until every outbox is published and every event queue is empty (twice in a row);
    returns the seconds it took."""
    started = time.monotonic()
    stable = 0
    while True:
        now = backlog(config, engine)
        elapsed = time.monotonic() - started
        idle = not any(now[s] for s in SCHEMAS) and not now["queued_messages"]
        stable = stable + 1 if idle else 0
        if stable >= 2:
            return elapsed
        if not idle:
            print(f"  catch-up {elapsed:5.0f} s: unsent {[now[s] for s in SCHEMAS]}, queued "
                  f"messages {now['queued_messages']}, dead letters {now['dead_letters']}",
                  flush=True)
        if elapsed > timeout:
            raise SystemExit(f"not caught up after {timeout} s: {now}")
        dead = running.restart_dead()
        if dead:
            print(f"  restarted {', '.join(dead)} (exited)", flush=True)
        time.sleep(5 if not idle else 1)


def storm_plan(engine, places: int, tag: str) -> list[tuple[int, int, int]]:
    """(organisation, group, places) release calls adding up to ``places``: groups with free
    places (capacity less enrolled children less the places allocation holds open, so an
    earlier storm's directed places count as taken) and children waiting who chose the
    organisation, no more places than children waiting (a child waits for up to three organisations, so a
    few places may find nobody left and become vacancies), spread over the region and
    interleaved. The demo city has fewer than 5,000 free seats: if ``places`` is more than
    the groups can take, every free seat is released (and said so)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT g.organization_id, g.id, g.capacity - g.enrolled - o.open AS free,
                      w.waiting
               FROM registry.groups g
               CROSS JOIN LATERAL (
                   SELECT count(*) AS open FROM allocation.places p
                   WHERE p.group_id = g.id AND p.status <> 'filled') o
               CROSS JOIN LATERAL (
                   SELECT count(*) AS waiting FROM queue.candidates c
                   JOIN queue.entries e ON e.application_number = c.application_number
                   WHERE c.organization_id = g.organization_id AND c.birth_year = g.birth_year
                     AND c.language = g.language AND c.group_kind = g.group_type
                     AND e.status = 'queued') w
               WHERE g.capacity > g.enrolled + o.open AND w.waiting > 0
               ORDER BY md5(g.id::text || :salt)"""), {"salt": tag}).all()
    budget = {(int(r.organization_id), int(r.id)): min(int(r.free), int(r.waiting))
              for r in rows}
    calls: list[tuple[int, int, int]] = []
    left = places
    while left > 0 and any(budget.values()):
        for key, free in budget.items():
            if left <= 0:
                break
            n = min(free, MAX_PER_CALL, left)
            if n <= 0:
                continue
            calls.append((key[0], key[1], n))
            budget[key] -= n
            left -= n
    if left > 0:
        print(f"  only {places - left} places can be released (the free seats of groups with "
              f"children waiting): releasing those", flush=True)
    return calls


def release_storm(config: dict, engine, calls: list[tuple[int, int, int]], rate: float,
                  callers: int, timeout: float) -> dict:
    """Release the planned places (paced at ``rate`` places a second; 0: at once), wait until
    every place is allocated and every direction is in the registry; returns what happened."""
    from eventlet.queue import LightQueue
    from sqlalchemy import text

    tag = f"storm-{time.time_ns()}"
    work: LightQueue = LightQueue()
    place_ids: list[str] = []
    errors: list[str] = []
    retried: list[str] = []

    def caller():
        with rpc_proxy(config, timeout=120) as rpc:
            while True:
                item = work.get()
                if item is None:
                    return
                org, group, n, i = item
                actor = {"id": f"staff:bench-{org}", "role": "staff", "organization_id": org,
                         "request_id": None}
                for attempt in range(3):  # as staff would: again, with the same key
                    try:
                        result = rpc.allocation.release_places(
                            org, group, n, actor, idempotency_key=f"{tag}-{i}")
                        place_ids.extend(result["place_ids"])
                        break
                    except Exception as exc:  # noqa: BLE001 - counted and shown
                        if attempt == 2:
                            errors.append(f"{org}/{group}: {exc!r}")
                        else:
                            retried.append(f"{org}/{group}: {exc!r}")

    pool = eventlet.GreenPool(callers)
    for _ in range(callers):
        pool.spawn(caller)
    eventlet.sleep(1)  # the callers' proxies connect before the clock starts
    started = time.monotonic()
    offered = 0
    for i, call in enumerate(calls):
        if rate > 0:
            wait = started + offered / rate - time.monotonic()
            if wait > 0:
                eventlet.sleep(wait)
        # keep at most two calls per caller waiting, so the pacing is real
        while work.qsize() > callers * 2:
            eventlet.sleep(0.005)
        work.put((*call, i))
        offered += call[2]
    for _ in range(callers):
        work.put(None)
    pool.waitall()
    released_in = time.monotonic() - started
    if retried:
        print(f"  {len(retried)} release calls tried again, e.g. {retried[:2]}", flush=True)
    if errors:
        print(f"  {len(errors)} release calls failed, e.g. {errors[:3]}", flush=True)
    print(f"  released {len(place_ids)} places in {released_in:.1f} s "
          f"({len(place_ids) / released_in:.0f} places/s offered)", flush=True)

    deadline = time.monotonic() + timeout
    last = None
    while True:
        with engine.connect() as conn:
            row = conn.execute(text(
                """SELECT count(*) FILTER (WHERE p.status <> 'priority') AS handled,
                          count(d.number) AS issued, count(r.number) AS published
                   FROM allocation.places p
                   LEFT JOIN allocation.directions d ON d.place_id = p.place_id
                   LEFT JOIN registry.directions r ON r.number = d.number
                   WHERE p.place_id = ANY(CAST(:ids AS uuid[]))"""),
                {"ids": place_ids}).one()
        if row.handled >= len(place_ids) and row.published >= row.issued:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"after {timeout} s: {row.handled} of {len(place_ids)} places "
                             f"handled, {row.published} of {row.issued} directions in the "
                             "registry")
        if last is None or time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  {time.monotonic() - started:5.0f} s: {row.handled} handled, "
                  f"{row.issued} directions, {row.published} in the registry", flush=True)
        time.sleep(0.5)
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT p.place_id, p.status, p.released_at, d.number, d.issued_at,
                      r.republished_at
               FROM allocation.places p
               LEFT JOIN allocation.directions d ON d.place_id = p.place_id
               LEFT JOIN registry.directions r ON r.number = d.number
               WHERE p.place_id = ANY(CAST(:ids AS uuid[]))"""),
            {"ids": place_ids}).all()
    directed = [r for r in rows if r.number is not None]
    first_release = min(r.released_at for r in rows)
    last_release = max(r.released_at for r in rows)
    last_issue = max((r.issued_at for r in directed), default=None)
    last_visible = max((r.republished_at for r in directed), default=None)
    seconds = (last_issue - first_release).total_seconds() if directed else None
    return {
        "places": len(place_ids), "calls": len(calls), "errors": len(errors),
        "retried": len(retried),
        "issued": len(directed), "vacancies": sum(r.status == "vacancy" for r in rows),
        "released_in": released_in,
        "release_seconds": (last_release - first_release).total_seconds(),
        "seconds": seconds, "rate": len(directed) / seconds if seconds else 0.0,
        "visible_seconds": (last_visible - first_release).total_seconds() if directed else None,
        "to_issue_ms": [(r.issued_at - r.released_at).total_seconds() * 1000 for r in directed],
        "to_protocol_ms": [(r.republished_at - r.released_at).total_seconds() * 1000
                           for r in directed],
    }


def reconcile_registry(config: dict) -> tuple[int, dict, float, list[str]]:
    """``kezek registry reconcile`` in this process against the running services:
    (differences, per read model, seconds, the first lines it printed)."""
    from services.registry import reconcile

    lines: list[str] = []
    started = time.monotonic()
    report = reconcile.reconcile(config, out=lines.append)
    return report.total, report.counts, time.monotonic() - started, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=150.0,
                        help="places released a second (0: as fast as the callers go)")
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--applications", type=int, default=None,
                        help="queue length (default: the demo city's 200,000)")
    parser.add_argument("--reuse", metavar="TAG",
                        help="the kept database kezek_test_TAG of an earlier run")
    parser.add_argument("--full-catch-up", action="store_true",
                        help="publish the applications outbox backlog too")
    parser.add_argument("--db-connections", type=int, default=12,
                        help="database connections per service process at most")
    parser.add_argument("--catch-up-timeout", type=float, default=3600)
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds to wait for the storm's places after the releases")
    args = parser.parse_args()

    from services import demo
    from services.common.db import get_engine

    scope = reused(args.reuse) if args.reuse else isolated()
    with scope as config:
        print(f"database {config['DB_URL'].rsplit('/', 1)[-1]}, vhost {config['KEZEK_VHOST']}",
              flush=True)
        started = time.monotonic()
        summary = demo.load(config, "city", SEED, applications=args.applications,
                            log=lambda m: print(m, flush=True))
        print(f"demo city: {time.monotonic() - started:.0f} s, "
              f"{summary.get('applications') or summary.get('already_loaded')} applications "
              f"{summary['seconds']}", flush=True)
        engine = get_engine(config["DB_URL"])
        if not args.full_catch_up:
            discarded = discard_backlog(config)
            print(f"  the load's outbox backlog marked delivered (benchmark shortcut, see the "
                  f"docstring): {discarded}", flush=True)
        running = Services(limited(config, args.db_connections), SERVICES)
        try:
            running.start()
            started = time.monotonic()
            if args.full_catch_up:
                caught_up = catch_up(config, engine, running, args.catch_up_timeout)
                print(f"services caught up with the load's events in {caught_up:.0f} s",
                      flush=True)
            else:
                caught_up = 0.0
                print(f"registry queue read model projected by the loader: "
                      f"{summary.get('registry_rows_projected')} rows", flush=True)
            calls = storm_plan(engine, args.places, str(time.time_ns()))
            pace = f"offered at {args.rate:g}/s" if args.rate else "as fast as possible"
            print(f"storm: {sum(c[2] for c in calls)} places in {len(calls)} release calls over "
                  f"{len({c[1] for c in calls})} groups, {pace}", flush=True)
            cpu_before = cpu_by_process(running)
            storm = release_storm(config, engine, calls, args.rate, args.callers, args.timeout)
            rss = running.peak_rss()
            # every event of the storm delivered (the registry has caught up) before comparing
            catch_up(config, engine, running, args.timeout)
            cpu_after = cpu_by_process(running)
            cpu = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / max(storm["places"], 1)
                   for k in cpu_after}
            differences, per_model, reconcile_seconds, lines = reconcile_registry(config)
        finally:
            running.stop()

    print()
    for line in lines[:20]:
        print(f"  reconcile: {line}")
    print(f"storm: {storm['issued']} directions, {storm['vacancies']} vacancies of "
          f"{storm['places']} places ({storm['errors']} failed calls); releases took "
          f"{storm['release_seconds']:.1f} s, last direction issued after "
          f"{storm['seconds'] or 0:.1f} s, last one in the protocol after "
          f"{storm['visible_seconds'] or 0:.1f} s; peak RSS MiB "
          + ", ".join(f"{k} {v['peak'] / 1024:.0f}" for k, v in rss.items()), flush=True)
    servers = {k: cpu.pop(k) for k in ("rabbitmq", "postgresql")}
    print("CPU ms a place (service processes, storm and its events): "
          + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
          + f"; total {sum(cpu.values()):.1f}; and the servers: "
          + ", ".join(f"{k} {v:.1f}" for k, v in servers.items())
          + f"; everything {sum(cpu.values()) + sum(servers.values()):.1f} "
          f"(two cores give 2,000 ms a second)", flush=True)
    offered = f"offered {args.rate:g}/s" if args.rate else "released as fast as possible"
    emit(Figure(WORKLOAD, "places_allocated_per_s", storm["rate"], "places/s",
                floor="pika_roundtrip_per_s",
                note=f"{storm['issued']} directions of {storm['places']} places, {offered}, "
                     "first release to last direction (target >= 150)"))
    emit(Figure(WORKLOAD, "release_to_protocol_p50_ms", median(storm["to_protocol_ms"]), "ms",
                floor="rpc_roundtrip_ms", note="release -> registry directions protocol row"))
    emit(Figure(WORKLOAD, "release_to_protocol_p95_ms", percentile(storm["to_protocol_ms"], 95),
                "ms", floor="rpc_roundtrip_ms", note="target < 2,000"))
    emit(Figure(WORKLOAD, "release_to_direction_p50_ms", median(storm["to_issue_ms"]), "ms",
                floor="rpc_roundtrip_ms", note="release -> direction issued (allocation)"))
    emit(Figure(WORKLOAD, "release_to_direction_p95_ms", percentile(storm["to_issue_ms"], 95),
                "ms", floor="rpc_roundtrip_ms"))
    emit(Figure(WORKLOAD, "service_cpu_ms_per_place", sum(cpu.values()), "ms",
                note="CPU time of the five service processes over the storm / places "
                     "(2 cores: 2,000 ms/s in all)",
                extra={k: round(v, 2) for k, v in cpu.items()}))
    emit(Figure(WORKLOAD, "all_cpu_ms_per_place", sum(cpu.values()) + sum(servers.values()),
                "ms", note="the services, RabbitMQ and PostgreSQL over the storm / places "
                           "(150 places/s on 2 cores needs at most 13.3)",
                extra={k: round(v, 2) for k, v in servers.items()}))
    if args.full_catch_up:
        emit(Figure(WORKLOAD, "catch_up_seconds", caught_up, "s",
                    note="services handle the load's events before the storm"))
    emit(Figure(WORKLOAD, "reconcile_differences", differences, "",
                note=f"kezek registry reconcile after the storm ({reconcile_seconds:.0f} s): "
                     + ", ".join(f"{k} {v}" for k, v in per_model.items())))
    if os.environ.get("KEZEK_KEEP_TEST_DB"):
        print(f"kept: --reuse {config['KEZEK_TEST_TAG']}", flush=True)


if __name__ == "__main__":
    main()
