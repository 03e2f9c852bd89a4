"""Benchmark (not a test): the gateway's queue-number lookup next to a gateway endpoint that makes
no RPC call but otherwise runs the same pipeline, measured in the same run.

    .venv/bin/python tests/bench/gateway.py [--seconds 10] [--concurrency 32] [--applications 300]
        [--processes | --one-process]

Two layouts, one after the other, each in a database and vhost of its own with the rate
limits raised (every request comes from this one address):

- a process a service (``nameko run`` each, as the containers and ``make run-scaled`` run
  them), the deployed layout: the target is read here;
- every service in one ``nameko run`` process (as ``make run`` does): one Python process,
  so one core, serves the gateway and every service at once.

An officer files a few hundred applications through the API; once the registry lists them,
the loads run one after the other, each ``--concurrency`` clients on keep-alive connections
for ``--seconds`` (after a short warm-up):

1. ``GET /healthz`` (one-process layout only): the HTTP server, the gateway's entrypoint and a
   worker; no RPC, no rate limit, no audit (shown for context: no user request is that cheap);
2. ``GET /api/v1/languages``: a user request without RPC: routing, rate limit, a worker, JSON
   rendering, and the audit record every user action gets, published with a broker confirm
   before the answer leaves (reference data the gateway serves from its own route table);
3. ``GET /api/v1/queue/lookup?application_number=...`` (a random filed application each time):
   the same pipeline plus one RPC to the registry (an indexed read).

Prints requests a second, p50 and p99 of each, and the ratio lookup / languages requests a
second: what the RPC costs a user request (target: at least 0.5). In the per-service layout
the two loads alternate in ``--rounds`` windows (3 by default), so a change in the machine's
speed during the run weighs on both alike; it also prints the CPU time each process (RabbitMQ, PostgreSQL and this client included) spends per
answered request in the measured window: where a request's cost lies.
With tests/bench/common.py present, also ``BENCH {json}`` lines.
"""

import eventlet

eventlet.monkey_patch()  # before requests, kombu and psycopg import socket

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import requests  # noqa: E402

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC)
from tests.bench.common import cpu_seconds, servers_cpu_seconds  # noqa: E402
from tests.conftest import destroy_isolated_config, make_isolated_config  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.system import System, random_phone, start_system, valid_iin  # noqa: E402

try:
    from tests.bench.common import Figure, emit, percentile
except ImportError:  # the shared benchmark module is optional: human lines only
    Figure = emit = None

    def percentile(values: list[float], q: float) -> float:
        ordered = sorted(values)
        if not ordered:
            return float("nan")
        k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
        return ordered[k]


WORKLOAD = "gateway"
TARGET_RATIO = 0.5
RAISED_LIMITS = {
    "RATE_LIMIT_PER_MINUTE": 100_000_000,
    "RATE_BURST": 10_000_000,
    "BLOCK_AFTER_EXCESSES": 100_000_000,
    "OTP_MAX_PER_HOUR": 100_000,
}


# -- set-up ---------------------------------------------------------------------------------------
def start(config: dict, tmp: Path):
    proc = start_system(config, tmp)
    base_url = "http://" + config["WEB_SERVER_ADDRESS"]

    def up():
        if proc.poll() is not None:
            raise RuntimeError("system exited:\n" + (tmp / "system.log").read_text()[-3000:])
        try:
            return requests.get(base_url + "/api/v1/districts", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=90, interval=0.3, message="system up")
    return proc, System(config, base_url, tmp / "system.log")


def file_applications(system: System, n: int, rng: random.Random) -> list[str]:
    """An organisation with groups for four birth years, and n applications filed through the
    API by an officer on the parents' behalf (8 at a time)."""
    officer_phone = random_phone()
    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone, fingerprint="bench-officer")["session"]
    district = f"Bench-{uuid.uuid4().hex[:6]}"
    r = officer.post(system.url("/api/v1/organizations"), json={
        "name": "Бенчмарк балабақшасы", "address": "Алматы", "district": district,
        "ownership": "state", "kind": "kindergarten", "languages": ["kk", "ru"]}, timeout=30)
    r.raise_for_status()
    org_id = r.json()["id"]
    this_year = dt.date.today().year
    years = [this_year - k for k in (1, 2, 3, 4)]
    for year in years:
        for language in ("kk", "ru"):
            r = officer.post(system.url(f"/api/v1/organizations/{org_id}/groups"), json={
                "name": f"{year} {language}", "group_type": "general", "birth_year": year,
                "language": language, "capacity": 30}, timeout=30)
            r.raise_for_status()

    def one(i: int) -> str | None:
        birth = dt.date(rng.choice(years), rng.randint(1, 12), rng.randint(1, 28))
        if birth >= dt.date.today():
            birth = birth.replace(year=birth.year - 1)
        phone = random_phone()
        body = {
            "applicant": {"iin": valid_iin(dt.date(1990, 1, 1) + dt.timedelta(days=i), "F"),
                          "full_name": f"Ата-ана {i}", "phone": phone},
            "child": {"iin": valid_iin(birth, rng.choice("MF")), "full_name": f"Бала {i}",
                      "birth_date": birth.isoformat()},
            "queue_type": "general", "language": rng.choice(("kk", "ru")),
            "district": district, "preferred_organizations": [org_id],
            "desired_start": f"{this_year + 1}-09-01", "benefit": None,
        }
        answer = officer.post(system.url("/api/v1/applications"), json=body, timeout=60)
        if answer.status_code != 201:
            refused.append(answer.text[:300])
            return None  # e.g. a random IIN met an earlier one: one application fewer
        return answer.json()["application_number"]

    refused: list[str] = []
    pool = eventlet.GreenPool(8)
    numbers = [number for number in pool.imap(one, range(n)) if number]
    if len(numbers) < n * 0.9:
        raise RuntimeError(f"only {len(numbers)} of {n} applications were filed; refusals: "
                           + "\n".join(sorted(set(refused))[:10]))

    def listed() -> bool:  # the registry's read model follows by events
        r = requests.get(system.url("/api/v1/queue/lookup"),
                         params={"application_number": numbers[-1]}, timeout=10)
        return r.status_code == 200

    wait_for(listed, timeout=120, interval=0.5, message="applications in the registry")
    return numbers


# -- load ---------------------------------------------------------------------------------------
def load(address: str, path_of, seconds: float, concurrency: int,
         warmup: float = 2.0, pid: int | None = None, expect: int = 200,
         meter=None) -> dict:
    """``concurrency`` clients on keep-alive connections; latencies of the answers with status
    ``expect`` inside the measured window, and the requests a second. ``meter()`` returns CPU
    seconds by process name; what each spent inside the window comes back as ``cpu_by``."""
    host, port = address.rsplit(":", 1)
    latencies: list[float] = []
    state = {"errors": 0}
    measure_from = time.monotonic() + warmup
    stop_at = measure_from + seconds

    def client(i: int) -> None:
        headers = {"X-Device-Fingerprint": f"bench-client-{i}"}
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                conn.request("GET", path_of(), headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                state["errors"] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            finished = time.monotonic()
            if started < measure_from or finished > stop_at:
                continue
            if response.status == expect:
                latencies.append((finished - started) * 1000)
            else:
                state["errors"] += 1
        conn.close()

    def cpu_meter() -> None:  # the services' CPU time spent inside the measured window
        eventlet.sleep(max(0.0, measure_from - time.monotonic()))
        state["cpu_from"] = cpu_seconds(pid)
        eventlet.sleep(max(0.0, stop_at - time.monotonic()))
        state["cpu"] = cpu_seconds(pid) - state["cpu_from"]

    def window_meter() -> None:
        eventlet.sleep(max(0.0, measure_from - time.monotonic()))
        before = meter()
        eventlet.sleep(max(0.0, stop_at - time.monotonic()))
        after = meter()
        state["cpu_by"] = {k: after[k] - before[k] for k in after}

    pool = eventlet.GreenPool(concurrency + 2)
    if pid is not None:
        pool.spawn(cpu_meter)
    if meter is not None:
        pool.spawn(window_meter)
    for i in range(concurrency):
        pool.spawn(client, i)
    pool.waitall()
    cpu = state.get("cpu")
    return {
        "cpu_ms_per_request": cpu * 1000 / len(latencies) if cpu and latencies else None,
        "cpu_by": state.get("cpu_by", {}),
        "per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "requests": len(latencies),
        "latencies": latencies,
        "errors": state["errors"],
    }


def line(name: str, result: dict, concurrency: int, seconds: float) -> None:
    print(f"{name:28s} {result['per_s']:8.1f} req/s   p50 {result['p50_ms']:7.2f} ms   "
          f"p99 {result['p99_ms']:7.2f} ms   ({result['requests']} answers, "
          f"{result['errors']} errors; concurrency {concurrency}, {seconds:g} s)", flush=True)
    if result.get("cpu_ms_per_request"):
        print(f"{'':28s} services process CPU {result['cpu_ms_per_request']:.2f} ms a request",
              flush=True)


def report(healthz: dict, floor: dict, lookup: dict, concurrency: int, seconds: float,
           n: int) -> None:
    ratio = lookup["per_s"] / floor["per_s"] if floor["per_s"] else float("nan")
    to_healthz = lookup["per_s"] / healthz["per_s"] if healthz["per_s"] else float("nan")
    for name, result in (("GET /healthz (no pipeline)", healthz),
                         ("GET /api/v1/languages", floor),
                         ("GET /api/v1/queue/lookup", lookup)):
        line(name, result, concurrency, seconds)
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ratio lookup / languages requests a second = {ratio:.2f} ({verdict} the target "
          f"{TARGET_RATIO}): the same audited, rate-limited pipeline with and without the "
          f"registry RPC; queue of {n} applications", flush=True)
    print(f"(lookup / healthz = {to_healthz:.2f}: /healthz skips the rate limit and the audit "
          "record, so it is no user request's floor)", flush=True)
    if emit is None:
        return
    where = f"concurrency {concurrency}, {seconds:g} s, keep-alive"
    notes = {
        "healthz": f"{where}; no RPC, no rate limit, not audited",
        "languages": f"{where}; no RPC; rate limit, audit record (confirmed), JSON",
        "queue_lookup": (f"{where}; floor: GET /api/v1/languages (same pipeline, no RPC) in "
                         f"the same run, target ratio >= {TARGET_RATIO}"),
    }
    for key, result in (("healthz", healthz), ("languages", floor), ("queue_lookup", lookup)):
        extra = {k: result[k] for k in ("requests", "errors", "cpu_ms_per_request")}
        against = floor if key == "queue_lookup" else None
        if key == "queue_lookup":
            extra["ratio_to_healthz"] = to_healthz
        emit(Figure(WORKLOAD, f"{key}_per_s", result["per_s"], "req/s",
                    floor_value=against["per_s"] if against else None, note=notes[key],
                    extra=extra))
        for q in ("p50", "p99"):
            emit(Figure(WORKLOAD, f"{key}_{q}_ms", result[f"{q}_ms"], "ms",
                        floor_value=against[f"{q}_ms"] if against else None, note=where))


def in_processes(args, rng: random.Random) -> None:
    """The two loads with every service in its own ``nameko run`` process, and the CPU time
    each process spends per answered request: where a request's cost lies (printed only)."""
    from tests.bench.common import Services, isolated

    with isolated() as config:
        config["LOGGING"]["root"]["level"] = "WARNING"
        tmp = Path(tempfile.mkdtemp(prefix="kezek-bench-gateway-"))
        names = ["registry", "queue", "applications", "audit", "gateway"]
        with Services(config, names, settings=RAISED_LIMITS) as running:
            address = running.config["WEB_SERVER_ADDRESS"]
            system = System(running.config, "http://" + address, tmp / "system.log")
            numbers = file_applications(system, args.applications, rng)
            paths = {
                "GET /api/v1/languages": lambda: "/api/v1/languages",
                "GET /api/v1/queue/lookup": lambda: "/api/v1/queue/lookup?" + urlencode(
                    {"application_number": rng.choice(numbers)}),
            }

            def meter() -> dict[str, float]:
                return {**{k: cpu_seconds(p.pid) for k, p in running.procs.items()},
                        **servers_cpu_seconds(), "bench client": cpu_seconds(os.getpid())}

            # the two loads alternate in --rounds windows, so a drift of the machine's speed
            # during the run weighs on both alike
            window = args.seconds / args.rounds
            parts: dict[str, list[dict]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, path_of in paths.items():
                    parts[name].append(load(address, path_of, window, args.concurrency,
                                            meter=meter))
            results = {}
            for name, windows in parts.items():
                latencies = [ms for w in windows for ms in w["latencies"]]
                cpu_by: dict[str, float] = {}
                for w in windows:
                    for k, v in w["cpu_by"].items():
                        cpu_by[k] = cpu_by.get(k, 0.0) + v
                result = results[name] = {
                    "per_s": len(latencies) / args.seconds, "requests": len(latencies),
                    "errors": sum(w["errors"] for w in windows), "cpu_by": cpu_by,
                    "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}
                line(name, result, args.concurrency, args.seconds)
                n = max(result["requests"], 1)
                print(f"{'':28s} CPU ms a request: " + ", ".join(
                    f"{k} {v * 1000 / n:.2f}" for k, v in cpu_by.items()), flush=True)
            floor, lookup = results.values()
            ratio = lookup["per_s"] / max(floor["per_s"], 1e-9)
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            print(f"ratio lookup / languages requests a second = {ratio:.2f} ({verdict} the "
                  f"target {TARGET_RATIO}; a process a service, as deployed)", flush=True)
            if 0 in (floor["requests"], lookup["requests"]):
                raise SystemExit("no answers were measured: see " + str(running.dir))
            if emit is None:
                return
            where = (f"concurrency {args.concurrency}, {args.seconds:g} s in {args.rounds} "
                     "alternating windows, keep-alive, a process a service")
            for key, result, against in (("languages", floor, None),
                                         ("queue_lookup", lookup, floor)):
                cpu = {k: round(v * 1000 / max(result["requests"], 1), 2)
                       for k, v in result["cpu_by"].items()}
                emit(Figure(f"{WORKLOAD}_per_service", f"{key}_per_s", result["per_s"],
                            "req/s", floor_value=against["per_s"] if against else None,
                            note=where, extra={"cpu_ms_per_request": cpu}))
                for q in ("p50", "p99"):
                    emit(Figure(f"{WORKLOAD}_per_service", f"{key}_{q}_ms", result[f"{q}_ms"],
                                "ms", floor_value=against[f"{q}_ms"] if against else None,
                                note=where))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--applications", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3,
                        help="a process a service: alternate the two loads in this many "
                             "windows of --seconds / rounds each")
    parser.add_argument("--decompose", action="store_true",
                        help="also measure an audited request without RPC (a 404)")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--processes", action="store_true",
                        help="only the layout with each service in its own process (as the "
                             "containers run them)")
    layout.add_argument("--one-process", action="store_true",
                        help="only the layout with every service in one process (make run)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if not args.one_process:
        in_processes(args, rng)
        if args.processes:
            return
        print(flush=True)
    in_one_process(args, rng)


def in_one_process(args, rng: random.Random) -> None:
    """The three loads with every service in one ``nameko run`` process (as make run does)."""

    config = make_isolated_config()
    config["KEZEK"].update(RAISED_LIMITS)
    config["LOGGING"]["root"]["level"] = "WARNING"  # no access log line per request
    tmp = Path(tempfile.mkdtemp(prefix="kezek-bench-gateway-"))
    proc = None
    try:
        proc, system = start(config, tmp)
        started = time.monotonic()
        numbers = file_applications(system, args.applications, rng)
        print(f"filed {len(numbers)} applications through the API in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        address = config["WEB_SERVER_ADDRESS"]
        healthz = load(address, lambda: "/healthz", args.seconds, args.concurrency,
                       pid=proc.pid)
        floor = load(address, lambda: "/api/v1/languages", args.seconds, args.concurrency,
                     pid=proc.pid)
        lookup = load(
            address,
            lambda: "/api/v1/queue/lookup?" + urlencode(
                {"application_number": rng.choice(numbers)}),
            args.seconds, args.concurrency, pid=proc.pid)
        report(healthz, floor, lookup, args.concurrency, args.seconds, len(numbers))
        if args.decompose:
            # where the difference goes: the same pipeline and audit record without the RPC
            audited = load(address, lambda: "/api/v1/no-such-path", args.seconds,
                           args.concurrency, pid=proc.pid, expect=404)
            print(f"{'GET /api/v1/no-such-path':28s} {audited['per_s']:8.1f} req/s   p50 "
                  f"{audited['p50_ms']:7.2f} ms   p99 {audited['p99_ms']:7.2f} ms   (audited "
                  f"404, no RPC; services process CPU {audited['cpu_ms_per_request'] or 0:.2f} "
                  "ms a request)", flush=True)
        if 0 in (healthz["requests"], floor["requests"], lookup["requests"]):
            raise SystemExit("no answers were measured: see " + str(tmp / "system.log"))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - stopping: kill what does not stop
                proc.kill()
        destroy_isolated_config(config)


if __name__ == "__main__":
    main()
