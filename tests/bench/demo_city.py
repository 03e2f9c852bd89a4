"""Benchmark (not a test): ``kezek demo load --scale city``, and the region passing
``kezek registry reconcile`` as soon as it is loaded.

    .venv/bin/python tests/bench/demo_city.py [--scale city] [--seed 1] [--no-reconcile]
        [--catch-up]

1. Runs the real command, ``kezek demo load --scale city --seed 1``, against a database and
   vhost of its own and times it (the goal: under 10 minutes on the 2-core machine). The
   loader ends by bringing the registry's queue read model up to the queue.
2. Starts every service but the gateway, each in its own ``nameko run`` process (as
   ``make run-scaled`` and the containers run them), and runs ``kezek registry reconcile``
   at once: exit status 0 and no difference, although the load's events have not been
   applied yet (they change nothing when they are: each carries a revision the read model
   already has).
3. With ``--catch-up``, times how long the services take to work through the load's events
   (about 450,000 for the city: hours on two cores): until every outbox is published and
   every event and audit queue of the vhost is empty; then reconciles again.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import services  # noqa: E402,F401
from tests.bench.common import Figure, Services, broker_backlog, emit, isolated  # noqa: E402

WORKLOAD = "demo_city"
SCHEMAS = ("registry", "applications", "queue", "allocation")
SERVICES = ["registry", "applications", "queue", "allocation", "audit"]


def kezek(config_file: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "--config", str(config_file),
                           *args], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def backlog(config: dict, engine) -> dict:
    from sqlalchemy import text

    out = {}
    with engine.connect() as conn:
        for schema in SCHEMAS:
            out[schema] = conn.execute(text(
                f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")).scalar()
        out["application_rows"] = conn.execute(text(
            "SELECT count(*) FROM applications.applications")).scalar()
    return {**out, **broker_backlog(config)}


def registry_table(engine) -> str | None:
    """The registry's queue read model table (named by the registry engineer)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'registry' "
            "AND column_name = 'application_number' AND table_name LIKE '%entr%' "
            "ORDER BY table_name LIMIT 1")).scalar()


def reconcile_now(config_file: Path, figure: str) -> None:
    started = time.monotonic()
    done = kezek(config_file, "registry", "reconcile", timeout=3600)
    seconds = time.monotonic() - started
    print(f"kezek registry reconcile: exit {done.returncode} in {seconds:.0f} s"
          f"\n{done.stdout[-3000:]}{done.stderr[-3000:]}", flush=True)
    emit(Figure(WORKLOAD, f"{figure}_exit_status", done.returncode, "",
                note="0: the registry agrees with queue and allocation; "
                     + (done.stdout.strip().splitlines() or ["no output"])[-1]))
    emit(Figure(WORKLOAD, f"{figure}_seconds", seconds, "s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="city")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-reconcile", action="store_true", help="only time the load")
    parser.add_argument("--catch-up", action="store_true",
                        help="also time the services working through the load's events")
    parser.add_argument("--catch-up-timeout", type=float, default=3600)
    args = parser.parse_args()

    from sqlalchemy import text

    from services.common.db import get_engine

    with isolated() as config:
        tmp = Path(tempfile.mkdtemp(prefix="kezek-demo-city-"))
        config_file = tmp / "config.yaml"
        run_config = dict(config)
        run_config["KEZEK"] = dict(config["KEZEK"], METRICS_PORTS={
            k: 0 for k in config["KEZEK"]["METRICS_PORTS"]})
        config_file.write_text(yaml.safe_dump(run_config, allow_unicode=True))
        started = time.monotonic()
        done = kezek(config_file, "demo", "load", "--scale", args.scale, "--seed",
                     str(args.seed))
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"kezek demo load failed:\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"kezek demo load --scale {args.scale}: {seconds:.0f} s, {summary}", flush=True)
        emit(Figure(WORKLOAD, "load_seconds", seconds, "s", note=(
            f"kezek demo load --scale {args.scale} --seed {args.seed}: "
            f"{summary['applications']} applications, {summary['organizations']} "
            f"organisations (goal < 600 s)")))
        emit(Figure(WORKLOAD, "load_applications_per_s", summary["applications"] / seconds,
                    "applications/s", floor="psycopg_commit_per_s",
                    note="validated, journalled, with events; 1,000 per transaction"))
        if args.no_reconcile:
            return

        engine = get_engine(config["DB_URL"])
        table = registry_table(engine)
        before = backlog(config, engine)
        events = sum(before[s] for s in SCHEMAS)
        print(f"backlog after the load: {before} (registry read model table: {table})",
              flush=True)

        # one process per service, as in production (`make run-scaled` runs them so too)
        running = Services(config, SERVICES)
        try:
            running.start()
            # the reconciliation asks the running queue and allocation services
            reconcile_now(config_file, "reconcile")
            if args.catch_up:
                started = time.monotonic()
                stable = 0
                restarts: list[str] = []
                while True:
                    time.sleep(5)
                    dead = running.restart_dead()
                    if dead:  # e.g. the broker restarted under it: restart it, as a policy would
                        restarts.extend(dead)
                        print(f"  restarted {', '.join(dead)} (exited)", flush=True)
                    now = backlog(config, engine)
                    with engine.connect() as conn:
                        in_model = conn.execute(text(f"SELECT count(*) FROM registry.{table}")
                                                ).scalar() if table else None
                    elapsed = time.monotonic() - started
                    print(f"  {elapsed:5.0f} s: unsent {[now[s] for s in SCHEMAS]}, queued "
                          f"messages {now['queued_messages']}, registry rows {in_model}, "
                          f"dead letters {now['dead_letters']}", flush=True)
                    idle = not any(now[s] for s in SCHEMAS) and not now["queued_messages"]
                    complete = in_model is None or in_model >= now["application_rows"]
                    stable = stable + 1 if idle and complete else 0
                    if stable >= 2:
                        break
                    if elapsed > args.catch_up_timeout:
                        raise SystemExit(f"not caught up after {args.catch_up_timeout} s")
                caught_up = time.monotonic() - started
                emit(Figure(WORKLOAD, "catch_up_seconds", caught_up, "s", note=(
                    f"services (a process each) handle the load's {events:,} outbox events "
                    "and what they cause, until the registry has every application"
                    + (f"; services restarted meanwhile: {restarts}" if restarts else ""))))
                emit(Figure(WORKLOAD, "catch_up_events_per_s", events / caught_up, "events/s",
                            floor="pika_roundtrip_per_s",
                            note="load's outbox events / catch-up time"))
                reconcile_now(config_file, "reconcile_after_catch_up")
            rss = running.peak_rss()
            print("peak RSS (MiB): " + ", ".join(f"{k} {v['peak'] / 1024:.0f}"
                                                 for k, v in rss.items()), flush=True)
        finally:
            running.stop()


if __name__ == "__main__":
    main()
