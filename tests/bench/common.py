"""Shared pieces of the benchmarks in tests/bench/ (scripts, not tests).

Every benchmark script:

- runs ``eventlet.monkey_patch()`` first, then imports this module;
- works in a database and vhost of its own (:func:`isolated`), dropped at the end;
- prints human-readable lines, and one ``BENCH {json}`` line per figure (:func:`emit`), which
  ``tests/bench/run_all.py`` (``make bench``) collects into one table;
- compares a figure with a *floor* measured in the same run by ``tests/bench/floors.py``
  (``floor="rpc_roundtrip_ms"``), or with a floor it measured itself (``floor_value=``).

:class:`Services` starts services as separate ``nameko run`` processes (so each one's memory
can be read), waits until each answers /readyz on its own metrics port, and stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "BENCH "

# the floors floors.py measures; figures name them in `floor`
FLOORS = {
    "pika_roundtrip_ms": "raw pika: publish (persistent, confirmed) + consume + ack, one message",
    "pika_roundtrip_per_s": "raw pika: confirmed publish + consume round trips a second",
    "psycopg_commit_ms": "raw psycopg: one-row INSERT + COMMIT",
    "psycopg_commit_per_s": "raw psycopg: one-row INSERT + COMMIT transactions a second",
    "rpc_roundtrip_ms": "Nameko: empty RPC round trip",
    "rpc_roundtrip_per_s": "Nameko: empty RPC round trips a second, one caller",
    "gateway_healthz_ms": "gateway: GET /healthz (no RPC)",
}


@dataclass
class Figure:
    workload: str
    figure: str
    value: float
    unit: str
    floor: str | None = None          # a FLOORS name, resolved by run_all.py
    floor_value: float | None = None  # a floor the script measured itself
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor_value:
            return self.value / self.floor_value
        return None


def emit(fig: Figure) -> Figure:
    """Print the figure for people and as a BENCH line for run_all.py."""
    line = f"{fig.workload}: {fig.figure} = {fig.value:,.3f} {fig.unit}"
    if fig.floor_value is not None:
        line += f" (floor {fig.floor or ''} {fig.floor_value:,.3f}, ratio {fig.ratio:.2f})"
    elif fig.floor:
        line += f" (compared with floor {fig.floor})"
    if fig.note:
        line += f" [{fig.note}]"
    print(line, flush=True)
    print(PREFIX + json.dumps(asdict(fig), ensure_ascii=False, default=str), flush=True)
    return fig


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn, *args, **kwargs) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


@contextlib.contextmanager
def isolated(tag: str | None = None) -> Iterator[dict]:
    """A fresh database and vhost (migrated, queues declared), dropped afterwards; keep them
    with KEZEK_KEEP_TEST_DB=1."""
    from tests.conftest import destroy_isolated_config, make_isolated_config

    config = make_isolated_config(tag)
    try:
        yield config
    finally:
        destroy_isolated_config(config)


def free_port() -> int:
    from tests.conftest import free_port as port

    return port()


def discard_backlog(config: dict, schemas: tuple[str, ...] = (
        "registry", "applications", "queue", "allocation")) -> dict[str, int]:
    """Mark the outbox rows a bulk load left unsent as sent, without publishing them.

    BENCHMARK SHORTCUT, never for a real system: a city load leaves hundreds of thousands of
    events (application_filed, queue_entry_changed, ...) for the running services to catch up
    with, which takes many minutes and would be measured instead of the workload. The figures
    that follow do not read what those events build (the registry's queue read model); the
    catch-up itself is measured by `tests/bench/demo_city.py`.
    """
    from sqlalchemy import text

    from services.common.db import get_engine

    engine = get_engine(config["DB_URL"])
    out = {}
    with engine.begin() as conn:
        for schema in schemas:
            out[schema] = conn.execute(text(
                f"UPDATE {schema}.outbox SET sent_at = clock_timestamp() "
                "WHERE sent_at IS NULL")).rowcount
    # as autovacuum would, in time: hundreds of thousands of rows just left the index of
    # unsent rows, and every relay cycle would walk their dead entries until then
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for schema in schemas:
            conn.execute(text(f"VACUUM (ANALYZE) {schema}.outbox"))
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except FileNotFoundError:
        pass
    return {"rss": out.get("VmRSS", 0), "peak": out.get("VmHWM", 0)}


class Services:
    """Services as separate ``nameko run`` processes on an isolated config.

    ``Services(config, ["queue", "registry"])`` -> start() ... stop(); ``peak_rss()`` reads
    each process's peak resident memory (call it before stop()).
    """

    MODULES = {
        "registry": "services.registry.service", "applications": "services.applications.service",
        "queue": "services.queue.service", "allocation": "services.allocation.service",
        "audit": "services.audit.service", "gateway": "services.gateway.service",
    }

    def __init__(self, config: dict, names: list[str], extra_modules: dict[str, str] | None
                 = None, settings: dict[str, Any] | None = None):
        import copy

        self.config = copy.deepcopy(config)
        self.names = list(names)
        self.modules = {**self.MODULES, **(extra_modules or {})}
        self.ports = {name: free_port() for name in self.names}
        ports = dict(self.config["KEZEK"].get("METRICS_PORTS") or {})
        ports.update(self.ports)
        self.config["KEZEK"]["METRICS_PORTS"] = ports
        self.config["KEZEK"].update(settings or {})
        self.config.setdefault("LOGGING", {})
        self.dir = Path(tempfile.mkdtemp(prefix="kezek-bench-"))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, timeout: float = 90, names: list[str] | None = None) -> "Services":
        config_file = self.dir / "config.yaml"
        config_file.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        names = names or self.names
        for name in names:
            log = open(self.dir / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "nameko", "run", "--config", str(config_file),
                 self.modules[name]], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                env=env)
        deadline = time.monotonic() + timeout
        for name in names:
            while not self._ready(name):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout} s:\n"
                                       f"{self.log_tail(name)}")
                time.sleep(0.2)
        return self

    def _ready(self, name: str) -> bool:
        import urllib.error
        import urllib.request

        if name not in self.ports or self.ports[name] == 0:
            return True
        # broker and database answer; a lagging outbox (the backlog of a bulk load) is no
        # reason to wait here, so the status code of /readyz is not enough
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/readyz",
                                        timeout=2) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        try:
            checks = json.loads(body).get("checks", {})
        except ValueError:
            return False
        return bool(checks.get("broker")) and checks.get("database", True) is not False

    def restart_dead(self) -> list[str]:
        """Start again any service whose process exited (as a restart policy would, e.g.
        after the broker dropped its connection); returns their names."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            self.start(names=dead)
        return dead

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def peak_rss(self) -> dict[str, dict[str, int]]:
        return {name: rss_kib(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> "Services":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def rpc_proxy(config: dict, timeout: float = 30):
    from nameko.standalone.rpc import ClusterRpcProxy

    return ClusterRpcProxy(config, timeout=timeout)


def broker_backlog(config: dict) -> dict[str, int]:
    """Messages waiting in the run's vhost: events for a handler and audit records to be stored
    (``queued_messages``; the checkpoint queue keeps its messages for an outside witness and RPC
    queues are not a backlog), and ``dead_letters``."""
    import subprocess

    result = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", config["KEZEK_VHOST"],
                             "name", "messages"], capture_output=True, text=True, timeout=60)
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return {"queued_messages": sum(n for q, n in counts.items()
                                   if q.startswith("evt-") or q == "kezek.audit"),
            "dead_letters": sum(n for q, n in counts.items() if q.endswith("dlq"))}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def servers_cpu_seconds() -> dict[str, float]:
    """CPU time used so far by RabbitMQ (beam.smp) and by PostgreSQL (every postgres process
    alive now; the services' pooled connections live through a load)."""
    totals = {"rabbitmq": 0.0, "postgresql": 0.0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm in ("beam.smp", "postgres"):
                totals["rabbitmq" if comm == "beam.smp" else "postgresql"] += \
                    cpu_seconds(int(proc.name))
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return totals
