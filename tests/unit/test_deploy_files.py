"""The deployment files agree with the rules in architecture.md, with each other and with the code:
docker-compose.yml, the Dockerfile and its entry point, RabbitMQ's definitions, Prometheus'
targets, the Makefile and the shell scripts.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.helpers import load_all_yaml_as_written, load_yaml_as_written

from services.common import amqp

ROOT = Path(__file__).resolve().parents[2]
KEZEK_SERVICES = ["registry", "applications", "queue", "allocation", "audit", "gateway"]
INFRASTRUCTURE = ["rabbitmq", "postgres"]


# -- helpers ---------------------------------------------------------------------------------------
def read(relative: str) -> str:
    return (ROOT / relative).read_text()


def compose_defaults(value: str) -> str:
    """Compose's ${VAR:-default} with the variable unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def seconds(duration: str) -> float:
    """A compose duration such as '60s' or '1m30s' in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return sum(float(n) * units[u] for n, u in parts)


def keys_anywhere(node) -> set:
    if isinstance(node, dict):
        found = set(node)
        for value in node.values():
            found |= keys_anywhere(value)
        return found
    if isinstance(node, list):
        found = set()
        for value in node:
            found |= keys_anywhere(value)
        return found
    return set()


def metrics_ports() -> dict[str, int]:
    """The default metrics port of every service, from config.yaml's ${VAR:default}."""
    raw = load_yaml_as_written(read("config.yaml"))["KEZEK"]["METRICS_PORTS"]
    return {name: int(re.fullmatch(r"\$\{\w+:(\d+)\}", value).group(1))
            for name, value in raw.items()}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml_as_written(read("docker-compose.yml"))


@pytest.fixture(scope="module")
def definitions() -> dict:
    return json.loads(read("deploy/rabbitmq/definitions.json"))


# -- docker-compose.yml ----------------------------------------------------------------------------
def test_compose_has_every_service_and_no_container_name(compose):
    assert set(KEZEK_SERVICES + INFRASTRUCTURE + ["migrate", "prometheus"]) <= set(
        compose["services"])
    # a fixed container name makes `--scale` impossible
    assert "container_name" not in keys_anywhere(compose)


def test_only_the_gateway_publishes_a_host_port(compose):
    published = {name: service["ports"] for name, service in compose["services"].items()
                 if service.get("ports")}
    assert published == {"gateway": ["8000:8000"]}
    assert not [name for name, service in compose["services"].items()
                if service.get("network_mode") == "host"]


def test_every_kezek_service_runs_the_one_image_as_itself(compose):
    images = set()
    for name in KEZEK_SERVICES + ["migrate"]:
        service = compose["services"][name]
        images.add(service["image"])
        assert service["build"] == "."
    assert len(images) == 1
    for name in KEZEK_SERVICES:
        service = compose["services"][name]
        assert service["environment"]["SERVICE"] == name
        assert "command" not in service and "entrypoint" not in service, name
    assert compose["services"]["migrate"]["command"] == ["kezek", "migrate"]
    assert compose["services"]["gateway"]["environment"]["KEZEK_GATEWAY_ADDRESS"] == "0.0.0.0:8000"


def test_every_kezek_service_is_healthy_only_when_ready(compose):
    ports = metrics_ports()
    assert set(ports) == set(KEZEK_SERVICES)
    for name in KEZEK_SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"], name
        assert f"http://127.0.0.1:{ports[name]}/readyz" in test[-1], name
    assert "rabbitmq-diagnostics" in compose["services"]["rabbitmq"]["healthcheck"]["test"]
    assert "pg_isready" in compose["services"]["postgres"]["healthcheck"]["test"]


def test_kezek_services_get_time_to_stop_gracefully(compose):
    for name in KEZEK_SERVICES:
        assert seconds(compose["services"][name]["stop_grace_period"]) >= 30, name


def test_services_start_after_what_they_need_is_healthy_or_done(compose):
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on")
        if depends_on is None:
            continue
        # the short list form only waits for the container to start
        assert isinstance(depends_on, dict), name
        for dependency, spec in depends_on.items():
            if dependency == "migrate":
                assert spec["condition"] == "service_completed_successfully", name
            else:
                assert spec["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    for name in KEZEK_SERVICES + ["migrate"]:
        needs = set(INFRASTRUCTURE) | ({"migrate"} if name != "migrate" else set())
        assert set(services[name]["depends_on"]) == needs, name


def test_kezek_services_reach_the_compose_broker_and_database(compose):
    services = compose["services"]
    for name in KEZEK_SERVICES + ["migrate"]:
        env = services[name]["environment"]
        broker = urlsplit(compose_defaults(env["KEZEK_AMQP_URI"]))
        assert broker.scheme == "amqp" and broker.hostname == "rabbitmq" and broker.port == 5672
        database = urlsplit(env["KEZEK_DB_URL"])
        assert database.hostname == "postgres" and database.path == "/kezek"
        assert database.username == "postgres"
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert postgres["POSTGRES_DB"] == "kezek"
    # a named volume: the data outlives the container
    assert any(mount.split(":")[0] in compose["volumes"]
               for mount in services["postgres"]["volumes"])


def test_the_services_log_in_to_rabbitmq_as_the_user_definitions_create(compose, definitions):
    env = compose["services"]["gateway"]["environment"]
    uri = urlsplit(compose_defaults(env["KEZEK_AMQP_URI"]))
    users = {u["name"]: u for u in definitions["users"]}
    assert "guest" not in users
    user = users[uri.username]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    # RabbitMQ's scheme: base64(salt[4] + sha256(salt[4] + password))
    stored = base64.b64decode(user["password_hash"])
    salt, digest = stored[:4], stored[4:]
    assert hashlib.sha256(salt + uri.password.encode()).digest() == digest
    vhost = unquote(uri.path[1:]) or "/"
    assert {v["name"] for v in definitions["vhosts"]} == {vhost}
    assert {"user": uri.username, "vhost": vhost, "configure": ".*", "write": ".*",
            "read": ".*"} in definitions["permissions"]


def test_environment_variables_set_for_kezek_are_ones_config_yaml_reads(compose):
    read_by_config = set(re.findall(r"\$\{(KEZEK_\w+)", read("config.yaml")))
    set_by_compose = {var for name in KEZEK_SERVICES + ["migrate"]
                      for var in compose["services"][name]["environment"]
                      if var.startswith("KEZEK_")}
    # KEZEK_CHAOS_* size the fault test; they are the test's knobs, not the services' settings
    set_by_makefile = {v for v in re.findall(r"\b(KEZEK_[A-Z_]+)=", read("Makefile"))
                       if not v.startswith("KEZEK_CHAOS_")}
    assert (set_by_compose | set_by_makefile) - read_by_config == set()


def compose_command() -> list[str]:
    """`docker compose` (the plugin) where it works, else Debian's docker-compose, which
    `make test` installs (deploy/bootstrap.sh --browser) when neither is there."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], check=False,
                                 capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "neither `docker compose` nor docker-compose: run deploy/bootstrap.sh --browser"
    return [legacy]


def test_docker_compose_accepts_the_file():
    result = subprocess.run([*compose_command(), "-f", "docker-compose.yml", "config", "-q"],
                            check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_a_broken_file(tmp_path):
    """The check above can fail: a service without an image or build is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  gateway:\n    ports: [\"8000:8000\"]\n")
    result = subprocess.run([*compose_command(), "-f", str(broken), "config", "-q"],
                            check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


# -- RabbitMQ and Prometheus configuration ---------------------------------------------------------
def test_definitions_declare_the_queues_exactly_as_the_services_do(definitions):
    """A queue declared twice with different arguments is refused (PRECONDITION_FAILED)."""
    expected = [amqp.dead_letter_queue(), amqp.audit_queue()]
    queues = {q["name"]: q for q in definitions["queues"]}
    exchanges = {e["name"]: e for e in definitions["exchanges"]}
    bindings = {(b["source"], b["destination"], b["routing_key"])
                for b in definitions["bindings"] if b["destination_type"] == "queue"}
    assert set(queues) == {q.name for q in expected}
    for queue in expected:
        declared = queues[queue.name]
        assert declared["arguments"] == queue.queue_arguments, queue.name
        assert declared["durable"] is True and declared["auto_delete"] is False
        assert declared["vhost"] == "/"
        exchange = exchanges[queue.exchange.name]
        assert exchange["type"] == queue.exchange.type
        assert exchange["durable"] is True and exchange["auto_delete"] is False
        assert (queue.exchange.name, queue.name, queue.routing_key or "") in bindings
    assert queues[amqp.AUDIT_QUEUE]["arguments"]["x-single-active-consumer"] is True
    assert exchanges[amqp.DLX]["type"] == "fanout"


def test_rabbitmq_loads_the_definitions_and_serves_prometheus_metrics(compose):
    lines = [line for line in read("deploy/rabbitmq/rabbitmq.conf").splitlines()
             if line.strip() and not line.startswith("#")]
    conf = {key.strip(): value.strip() for key, value in (line.split("=", 1) for line in lines)}
    mounts = {m.split(":")[0]: m.split(":")[1] for m in compose["services"]["rabbitmq"]["volumes"]}
    assert conf["load_definitions"] == mounts["./deploy/rabbitmq/definitions.json"]
    assert mounts["./deploy/rabbitmq/rabbitmq.conf"].startswith("/etc/rabbitmq/conf.d/")
    assert mounts["./deploy/rabbitmq/enabled_plugins"] == "/etc/rabbitmq/enabled_plugins"
    plugins = read("deploy/rabbitmq/enabled_plugins").strip()
    assert re.fullmatch(r"\[[a-z_,\s]+\]\.", plugins)
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins


def test_prometheus_scrapes_every_replica_of_every_service_on_its_metrics_port(compose):
    config = load_yaml_as_written(read("deploy/prometheus.yml"))
    discovered = {}
    static = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            for name in sd["names"]:
                discovered[name] = sd["port"]
        for sc in job.get("static_configs", []):
            static.update(sc["targets"])
    assert discovered == metrics_ports()
    assert "rabbitmq:15692" in static
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# -- Dockerfile and its entry point ----------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_runs_as_a_non_root_user_without_a_backdoor():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in instructions if op == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(op == "RUN" and "pip install ." in arg for op, arg in instructions)
    for relative in ("Dockerfile", "deploy/docker-entrypoint.sh", "docker-compose.yml"):
        assert "backdoor" not in read(relative).lower(), relative


def test_dockerfile_entrypoint_is_the_script_that_execs_nameko():
    instructions = dockerfile_instructions()
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])
    copied = {arg.split()[-1]: arg.split()[-2] for op, arg in instructions if op == "COPY"}
    assert copied[entrypoint[0]] == "deploy/docker-entrypoint.sh"
    assert "CMD" not in dict(instructions)  # a CMD would be passed as arguments and run instead
    assert re.search(r'^exec nameko run --config config\.yaml "services\.\$\{SERVICE\}\.service"$',
                     read("deploy/docker-entrypoint.sh"), re.MULTILINE)


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH where `nameko` and `kezek` print their PID and arguments."""
    for name in ("nameko", "kezek"):
        script = tmp_path / name
        script.write_text('#!/bin/sh\necho "$$ $(basename "$0") $*"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def run_entrypoint(fake_bin: Path, args: list[str], service: str | None):
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
    if service is not None:
        env["SERVICE"] = service
    proc = subprocess.Popen(["sh", str(ROOT / "deploy/docker-entrypoint.sh"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    return proc, out, err


def test_entrypoint_replaces_itself_with_nameko_for_the_service(fake_bin):
    proc, out, err = run_entrypoint(fake_bin, [], "allocation")
    assert proc.returncode == 0, err
    pid, *command = out.split()
    # same process: nameko is PID 1 in the container and receives SIGTERM itself
    assert int(pid) == proc.pid
    assert command == ["nameko", "run", "--config", "config.yaml", "services.allocation.service"]


def test_entrypoint_runs_a_given_command_instead(fake_bin):
    proc, out, err = run_entrypoint(fake_bin, ["kezek", "migrate"], None)
    assert proc.returncode == 0, err
    pid, *command = out.split()
    assert int(pid) == proc.pid and command == ["kezek", "migrate"]


@pytest.mark.parametrize("service", [None, "", "backdoor", "common"])
def test_entrypoint_refuses_an_unknown_service(fake_bin, service):
    proc, out, err = run_entrypoint(fake_bin, [], service)
    assert proc.returncode != 0
    assert out == ""
    assert "SERVICE" in err


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in read(".dockerignore").splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "var"} <= ignored
    assert not ignored & {"services", "config.yaml", "pyproject.toml", "deploy"}


# -- Makefile and scripts --------------------------------------------------------------------------
def make_dry_run(target: str) -> list[str]:
    env = {**os.environ, "MAKEFLAGS": ""}  # not a parent make's flags (-n is the point)
    result = subprocess.run(["make", "-n", "-C", str(ROOT), target], check=False,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def position(lines: list[str], fragment: str) -> int:
    matches = [i for i, line in enumerate(lines) if fragment in line]
    assert matches, f"{fragment!r} not in {lines}"
    return matches[0]


def test_make_run_bootstraps_migrates_loads_the_demo_then_execs_every_service():
    lines = make_dry_run("run")
    modules = " ".join(f"services.{s}.service" for s in KEZEK_SERVICES)
    steps = [
        position(lines, "bash deploy/bootstrap.sh"),
        position(lines, ".venv/bin/kezek migrate"),
        position(lines, ".venv/bin/kezek demo load --scale small --seed 1"),
        position(lines, f"exec .venv/bin/nameko run --config config.yaml {modules}"),
    ]
    assert steps == sorted(steps)


def test_make_test_installs_the_browser_and_runs_every_test():
    lines = make_dry_run("test")
    assert position(lines, "bash deploy/bootstrap.sh --browser") < position(
        lines, ".venv/bin/python -m pytest -q -p no:cacheprovider tests")


def test_make_run_scaled_starts_two_allocations_and_two_gateways():
    script = " ".join(make_dry_run("run-scaled"))
    starts = re.findall(r"start (\w+)((?: KEZEK_\w+=\S+)*);", script)
    assert sorted(name for name, _ in starts) == sorted(KEZEK_SERVICES + ["allocation", "gateway"])
    assert ("allocation", " KEZEK_METRICS_ALLOCATION=0") in starts
    gateways = [env for name, env in starts if name == "gateway"]
    assert " KEZEK_GATEWAY_ADDRESS=127.0.0.1:8000" in gateways
    assert " KEZEK_GATEWAY_ADDRESS=127.0.0.1:8001 KEZEK_METRICS_GATEWAY=0" in gateways
    assert "var/run-scaled.pids" in script


@pytest.mark.parametrize("script,shell", [("deploy/bootstrap.sh", "bash"), (".ci/run", "bash"),
                                          ("deploy/docker-entrypoint.sh", "sh")])
def test_scripts_parse(script, shell):
    result = subprocess.run([shell, "-n", str(ROOT / script)], check=False,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
