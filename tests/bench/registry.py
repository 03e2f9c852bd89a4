"""Benchmark (not a test): republication delay, and the queue registry page over 200,000
applications through the gateway.

    .venv/bin/python tests/bench/registry.py [--applications 200000] [--events 200]
        [--seconds 10] [--concurrency 24]

In a database and vhost of its own, with registry, queue, audit and gateway each in its own
``nameko run`` process:

1. Load: N queue entries through ``services.queue.commands.enqueue_bulk`` (the queue's bulk
   path: entries, journal rows and one ``queue_entry_changed`` event each in the outbox). Then
   the registry's read model is copied from the queue's snapshots in bulk and the load's
   events are marked delivered (a benchmark shortcut, see ``copy_to_registry``; checked by
   reconcile at the end); with ``--catch-up`` the services republish every event instead, as
   in production, and the catch-up is timed (events republished a second).
2. Republication delay: E changes made through the queue's RPC, one every 50 ms (half new
   applications, ``queue.enqueue``; half an officer's stop-list entries, ``stop_list_enter``).
   For each, from its commit (the ``queue_entry_changed`` outbox row's ``created_at``) to its
   republication (the registry row's ``republished_at`` at that revision); both are the
   database clock. Median and p95; target: median under 1 s.
3. ``GET /api/v1/queue?page_size=50`` through the gateway (public, audited, rate limits raised
   out of the way) with random district, birth year, queue type and page, at concurrency C for
   S seconds (after a warm-up): requests a second (target: at least 300) and p50/p99.
4. ``kezek registry reconcile --only queue``: the read model matches the queue (0 differences).
"""

import eventlet

eventlet.monkey_patch()  # before pika, kombu and psycopg import socket

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC)
from tests.bench.common import (Figure, Services, emit, isolated, median,  # noqa: E402
                                percentile, rpc_proxy)

WORKLOAD = "registry"
DISTRICTS = ["Алмалы", "Ауэзов", "Бостандық", "Жетісу", "Медеу", "Наурызбай", "Түрксіб",
             "Алатау"]
BIRTH_YEARS = list(range(2019, 2025))
SURNAMES = ["Ахметов", "Серіков", "Омаров", "Иванов", "Нұрланов", "Жұмабаев", "Ким",
            "Сейітов", "Бекмұратов", "Петров", "Оспанов", "Тоқаев"]
NAMES = ["Арман", "Дана", "Айгерім", "Нұрсұлтан", "Алихан", "Мария", "Әлия", "Тимур",
         "Аружан", "Данияр"]
OFFICER = {"id": "officer:bench", "role": "officer", "organization_id": None,
           "request_id": None}
# the public page is rate limited per client; the benchmark is one client
NO_LIMITS = {"RATE_LIMIT_PER_MINUTE": 10**9, "RATE_BURST": 10**9, "BLOCK_AFTER_EXCESSES": 10**9}


def entry(rng: random.Random, number: str, filed_at: dt.datetime) -> dict:
    """application_filed data, as the queue's enqueue takes it."""
    birth_year = rng.choice(BIRTH_YEARS)
    surname, name = rng.choice(SURNAMES), rng.choice(NAMES)
    roll = rng.random()
    benefit = None
    if roll < 0.03:
        benefit = {"tier": "out_of_turn", "verified": True, "category": "military"}
    elif roll < 0.13:
        benefit = {"tier": "first_priority", "verified": True, "category": "large_family"}
    return {
        "application_number": number, "applicant_name": f"{surname} {name} Серікұлы",
        "child_name": f"{surname} {rng.choice(NAMES)}", "child_birth_date": f"{birth_year}-05-01",
        "birth_year": birth_year,
        "queue_type": rng.choices(["general", "transfer", "special", "sanatorium"],
                                  [90, 4, 4, 2])[0],
        "language": rng.choices(["kk", "ru"], [65, 35])[0], "district": rng.choice(DISTRICTS),
        "preferred_organizations": rng.sample(range(1, 601), rng.randint(1, 3)),
        "desired_start": "2026-09-01", "filed_at": filed_at.isoformat(), "benefit": benefit,
        "current_organization_id": None, "current_group_id": None,
        "applicant_id": f"applicant:+7701{rng.randrange(10**7):07d}",
    }


def load(config: dict, n: int, rng: random.Random) -> list[str]:
    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands

    db = DatabaseAccess(get_engine(config["DB_URL"]), "queue")
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    span = (dt.datetime(2025, 9, 1, tzinfo=dt.timezone.utc) - start).total_seconds()
    moments = sorted(start + dt.timedelta(seconds=rng.random() * span) for _ in range(n))
    numbers = [f"A{i:09d}" for i in range(1, n + 1)]
    step = 20_000
    for part in range(0, n, step):
        done = commands.enqueue_bulk(db, [entry(rng, numbers[i], moments[i])
                                          for i in range(part, min(part + step, n))])
        assert not done["refused"], done["refused"][:3]
    return numbers


def copy_to_registry(config: dict) -> int:
    """BENCHMARK SHORTCUT: write the queue's entry snapshots into the registry's read model in
    bulk (what the registry's handler would write for each queue_entry_changed, without the
    inbox rows and statistic facts), then mark the load's events delivered. Republishing
    200,000 events one by one takes minutes (``--catch-up`` measures it); the figures below
    read only the read model, and ``kezek registry reconcile`` at the end checks it against
    the queue."""
    from sqlalchemy import text

    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands
    from services.registry import domain
    from tests.bench.common import discard_backlog

    engine = get_engine(config["DB_URL"])
    queue_db = DatabaseAccess(engine, "queue")
    insert = text("""
        INSERT INTO registry.queue_entries (application_number, revision, queue_name, district,
            queue_type, birth_year, language, status, benefit_tier, filed_at, stop_list,
            applicant_name, child_name, preferred_organizations, republished_at)
        SELECT x.application_number, x.revision, x.queue_name, x.district, x.queue_type,
               x.birth_year, x.language, x.status, x.benefit_tier, x.filed_at, x.stop_list,
               x.applicant_name, x.child_name,
               ARRAY(SELECT CAST(jsonb_array_elements_text(x.preferred_organizations)
                             AS bigint)), clock_timestamp()
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(application_number text,
             revision integer, queue_name text, district text, queue_type text,
             birth_year integer, language text, status text, benefit_tier text,
             filed_at timestamptz, stop_list jsonb, applicant_name text, child_name text,
             preferred_organizations jsonb)""")
    copied, after = 0, None
    while True:
        page = commands.export_entries(queue_db, after, 5000)
        rows = [domain.clean_entry(item) for item in page["items"]]
        with engine.begin() as conn:
            conn.execute(insert, {"rows": json.dumps(rows, default=str)})
        copied += len(rows)
        after = page["next"]
        if after is None:
            break
    # what autovacuum does to a table at rest: statistics and the visibility map (index-only
    # counts)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) registry.queue_entries"))
    discard_backlog(config, ("queue",))
    return copied


def count(engine, sql: str, **params) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar())


def catch_up(engine, n: int, timeout: float = 1800) -> float:
    """Seconds until the registry's queue read model has n entries."""
    started = last_print = time.monotonic()
    while True:
        have = count(engine, "SELECT count(*) FROM registry.queue_entries")
        if have >= n:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the registry has only {have} of {n} entries after {timeout} s")
        if time.monotonic() - last_print > 15:
            last_print = time.monotonic()
            print(f"  registry caught up with {have:,} of {n:,} entries", flush=True)
        time.sleep(1)


def purge_other_consumers(config: dict) -> None:
    """The applications service (not running here) also subscribes to queue_entry_changed for
    parents' feeds; drop what piled up in its queue."""
    listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", config["KEZEK_VHOST"],
                              "name"], capture_output=True, text=True, timeout=60).stdout
    for name in listing.split():
        if "--applications." in name:
            subprocess.run(["rabbitmqctl", "-q", "purge_queue", "-p", config["KEZEK_VHOST"],
                            name], capture_output=True, timeout=60)


def republication(config: dict, engine, numbers: list[str], events: int,
                  rng: random.Random, interval: float = 0.05) -> list[float]:
    """Seconds from each event's commit to its republication."""
    from sqlalchemy import text

    first_id = count(engine, "SELECT COALESCE(max(id), 0) FROM queue.outbox")
    changed = rng.sample(numbers, events - events // 2)
    new = [f"A{9 * 10**8 + i:09d}" for i in range(events // 2)]
    now = dt.datetime.now(dt.timezone.utc)
    with rpc_proxy(config) as rpc:
        for i in range(events):
            if i % 2 == 0 and changed:
                rpc.queue.stop_list_enter(changed.pop(), "documents_check", None, OFFICER)
            else:
                rpc.queue.enqueue(entry(rng, new.pop(), now))
            time.sleep(interval)
    sql = text("""
        WITH ev AS (
            SELECT o.payload->'data'->>'application_number' AS n,
                   CAST(o.payload->'data'->>'revision' AS integer) AS rev, o.created_at
            FROM queue.outbox o
            WHERE o.id > :first AND o.routing_key = 'queue_entry_changed')
        SELECT extract(epoch FROM r.republished_at - ev.created_at) AS delay
        FROM ev JOIN registry.queue_entries r
          ON r.application_number = ev.n AND r.revision = ev.rev""")
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            delays = [float(d) for d in conn.execute(sql, {"first": first_id}).scalars()]
        if len(delays) >= events or time.monotonic() > deadline:
            return delays
        time.sleep(0.5)


def page_requests(base: tuple[str, int], seconds: float, concurrency: int,
                  rng: random.Random, warmup: float = 2.0) -> tuple[int, list[float], dict]:
    """(requests answered 200 in the measured window, their latencies in ms, the other
    answers by status)."""
    host, port = base
    latencies: list[float] = []
    others: dict[str, int] = {}
    state = {"measure_from": time.monotonic() + warmup}
    stop_at = state["measure_from"] + seconds

    def url() -> str:
        roll = rng.random()
        if roll < 0.5:  # one queue's first pages: district, birth year, queue type
            query = {"district": rng.choice(DISTRICTS), "birth_year": rng.choice(BIRTH_YEARS),
                     "queue_type": "general", "page": rng.randint(1, 10)}
        elif roll < 0.8:  # a district, deeper pages
            query = {"district": rng.choice(DISTRICTS), "page": rng.randint(1, 50)}
        else:  # the whole city
            query = {"page": rng.randint(1, 20)}
        return "/api/v1/queue?" + urlencode({**query, "page_size": 50})

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                conn.request("GET", url(), headers={"X-Device-Fingerprint": "bench-registry"})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                others[type(exc).__name__] = others.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                continue
            if started < state["measure_from"]:
                continue
            if response.status == 200 and json.loads(body)["items"] is not None:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                others[str(response.status)] = others.get(str(response.status), 0) + 1
        conn.close()

    pool = eventlet.GreenPool(concurrency)
    for _ in range(concurrency):
        pool.spawn(client)
    pool.waitall()
    return len(latencies), latencies, others


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time a process has used."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(procs: dict, engine) -> dict[str, float]:
    """CPU seconds of each service process, of each PostgreSQL backend serving this
    benchmark's database (``pg:<pid>``), of RabbitMQ, of this client, and of the whole machine
    (busy, total)."""
    import os

    from sqlalchemy import text

    out = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity "
                                 "WHERE datname = current_database()")).scalars().all()
    out.update({f"pg:{pid}": cpu_seconds(pid) for pid in pids})
    # the broker serves every service on this machine, this benchmark's messages most of all
    beams = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True)
    out["rabbitmq"] = sum(cpu_seconds(pid) for pid in beams.stdout.split())
    out["client"] = time.process_time()
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    out["machine_total"] = sum(ticks) / hz
    out["machine_busy"] = (sum(ticks) - ticks[3] - ticks[4]) / hz
    return out


def reconcile_queue(config: dict) -> str:
    """``kezek registry reconcile --only queue`` as an operator runs it; its summary line."""
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(config, fh, allow_unicode=True)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", fh.name, "registry", "reconcile",
         "--only", "queue"], cwd=str(Path(__file__).resolve().parents[2]), capture_output=True,
        text=True, timeout=1800)
    lines = result.stdout.strip().splitlines()
    for line in lines[:-1][:10]:
        print(f"  {line}", flush=True)
    return lines[-1] if lines else result.stderr.strip()[-500:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--catch-up", action="store_true",
                        help="let the registry republish the load's events one by one (slow) "
                             "instead of copying the read model in bulk")
    args = parser.parse_args()
    rng = random.Random(5)

    from services.common.db import get_engine

    with isolated() as config:
        engine = get_engine(config["DB_URL"])
        started = time.monotonic()
        numbers = load(config, args.applications, rng)
        loaded = time.monotonic() - started
        print(f"{len(numbers):,} queue entries loaded with enqueue_bulk in {loaded:.0f} s",
              flush=True)
        if not args.catch_up:
            started = time.monotonic()
            copied = copy_to_registry(config)
            print(f"{copied:,} entries copied into the registry's read model in "
                  f"{time.monotonic() - started:.0f} s; the load's events marked delivered "
                  "(benchmark shortcut)", flush=True)
        with Services(config, ["registry", "queue", "audit", "gateway"],
                      settings=NO_LIMITS) as running:
            if args.catch_up:
                seconds = catch_up(engine, len(numbers))
                emit(Figure(WORKLOAD, "catch_up_events_per_s", len(numbers) / seconds,
                            "events/s", note=f"{len(numbers):,} queue_entry_changed relayed "
                                             f"and republished in {seconds:.0f} s"))
            purge_other_consumers(config)

            delays = republication(config, engine, numbers, args.events, rng)
            emit(Figure(WORKLOAD, "republication_median_s", median(delays), "s",
                        note=f"commit -> registry row, n={len(delays)}, one event every "
                             "50 ms (target < 1 s)"))
            emit(Figure(WORKLOAD, "republication_p95_s", percentile(delays, 95), "s",
                        note=f"max {max(delays):.3f} s"))

            host, port = config["WEB_SERVER_ADDRESS"].split(":")
            before = cpu_snapshot(running.procs, engine)
            done, latencies, others = page_requests((host, int(port)), args.seconds,
                                                    args.concurrency, rng, warmup=0)
            after = cpu_snapshot(running.procs, engine)
            errors = ", ".join(f"{n} {k}" for k, n in sorted(others.items())) or "none"
            emit(Figure(WORKLOAD, "queue_page_requests_per_s", done / args.seconds, "req/s",
                        note=f"GET /api/v1/queue page_size=50 over {len(numbers):,} "
                             f"applications, gateway, concurrency {args.concurrency}, "
                             f"{args.seconds:.0f} s, other answers: {errors} (target >= 300)"))
            emit(Figure(WORKLOAD, "queue_page_p50_ms", median(latencies), "ms"))
            emit(Figure(WORKLOAD, "queue_page_p99_ms", percentile(latencies, 99), "ms"))
            # what one request costs, so the figure can be read on a shared machine too
            used = {k: after[k] - before.get(k, 0.0) for k in after if not k.startswith("pg:")}
            used["postgres"] = sum(v - before.get(k, 0.0) for k, v in after.items()
                                   if k.startswith("pg:"))
            ours = ["registry", "gateway", "audit", "queue", "postgres", "rabbitmq", "client"]
            per = {k: 1000 * used[k] / max(done, 1) for k in ours}
            busy_share = used["machine_busy"] / max(used["machine_total"], 1e-9)
            ours_share = sum(used[k] for k in ours) / max(used["machine_busy"], 1e-9)
            print("CPU per answered request (ms): " + ", ".join(
                f"{k} {v:.1f}" for k, v in per.items()) + f"; machine {busy_share:.0%} busy, "
                f"{ours_share:.0%} of it this benchmark", flush=True)
            cores = len(__import__("os").sched_getaffinity(0))
            emit(Figure(WORKLOAD, "queue_page_cpu_ceiling_per_s",
                        1000 * cores / max(sum(per.values()), 1e-9), "req/s",
                        note=f"{cores} cores / CPU per request of all the processes above "
                             "(what an otherwise idle machine could serve)"))
            started = time.monotonic()
            summary = reconcile_queue(config)
            print(f"kezek registry reconcile --only queue: {summary} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
            rss = running.peak_rss()
        print("peak RSS (MiB): " + ", ".join(f"{k} {v['peak'] / 1024:.0f}"
                                             for k, v in rss.items()), flush=True)


if __name__ == "__main__":
    main()
