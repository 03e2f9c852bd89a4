#!/usr/bin/env bash
# Makes this machine ready to run and test Kezek (Debian bookworm, Python 3.11, run as root):
#   - PostgreSQL and RabbitMQ from Debian's packages, installed if absent, started if not running,
#     and waited for until they answer;
#   - PostgreSQL trusting user postgres on 127.0.0.1 and ::1 (changed only when it does not);
#   - the virtual environment .venv with the project installed (`pip install -e '.[test]'`),
#     re-installed only when pyproject.toml is newer than the stamp .venv/.installed;
#   - with --browser (what `make test` needs beyond `make run`): Debian's Chromium and
#     ChromeDriver for the browser tests, and Debian's docker-compose to check docker-compose.yml
#     when the docker compose plugin is absent, and kubectl (Debian's kubernetes-client) to
#     build deploy/k8s with kustomize when no kubectl is there.
# Idempotent: a second run only checks, and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

BROWSER=0
for arg in "$@"; do
    case "$arg" in
        --browser) BROWSER=1 ;;
        *) echo "usage: $0 [--browser]" >&2; exit 64 ;;
    esac
done

log() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: run as root"
    SUDO="sudo"
fi

APT_UPDATED=0
apt_install() {
    log "installing $* from Debian's packages"
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -q
        APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# wait_until SECONDS WHAT COMMAND...: retry COMMAND once a second until it succeeds.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    die "$what did not answer within ${seconds}s"
}

# -- system packages ------------------------------------------------------------------------------
missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
# Debian splits venv/ensurepip out of python3
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ "$BROWSER" -eq 1 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
    missing+=(chromium chromium-driver)
fi
if [ "$BROWSER" -eq 1 ] && ! command -v docker-compose >/dev/null \
        && ! { command -v docker >/dev/null && docker compose version >/dev/null 2>&1; }; then
    missing+=(docker-compose)
fi
if [ "$BROWSER" -eq 1 ] && ! command -v kubectl >/dev/null; then
    missing+=(kubernetes-client)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# -- PostgreSQL -----------------------------------------------------------------------------------
PG_PORT=5432
PG_CLUSTER=main
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
if ! pg_ready; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [ -n "$version" ] || die "no PostgreSQL cluster under /etc/postgresql"
    log "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start
    wait_until 60 PostgreSQL pg_ready
fi

pg_trusts() {
    PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -tAq -c 'select 1'
}
# as the postgres system user over the local socket (peer authentication)
pg_admin() { $SUDO runuser -u postgres -- psql -p "$PG_PORT" -tAq -c "$1"; }
if ! pg_trusts >/dev/null 2>&1; then
    # a fresh Debian install asks for a password on TCP; development and tests use trust
    hba=$(pg_admin 'show hba_file')
    log "allowing user postgres on 127.0.0.1 and ::1 without a password in $hba"
    $SUDO sed -i '1i # added by kezek deploy/bootstrap.sh: local development and tests\nhost all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    pg_admin 'select pg_reload_conf()' >/dev/null
    wait_until 10 "PostgreSQL with trust auth" pg_trusts
fi

# -- RabbitMQ -------------------------------------------------------------------------------------
rabbit_ready() { $SUDO rabbitmq-diagnostics -q ping --timeout 5; }
if ! rabbit_ready >/dev/null 2>&1; then
    log "starting RabbitMQ"
    $SUDO rabbitmq-server -detached
    wait_until 120 RabbitMQ rabbit_ready
fi
# the node can answer while its broker application is stopped (`rabbitmqctl stop_app`)
rabbit_app_running() { $SUDO rabbitmq-diagnostics -q check_running --timeout 5; }
if ! rabbit_app_running >/dev/null 2>&1; then
    log "starting RabbitMQ's broker application"
    $SUDO rabbitmqctl start_app >/dev/null
    wait_until 60 "RabbitMQ application" rabbit_app_running
fi

# -- Python virtual environment -------------------------------------------------------------------
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    log "creating .venv"
    rm -rf .venv
    python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    log "installing the project into .venv"
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
fi

log "ready (PostgreSQL 127.0.0.1:$PG_PORT, RabbitMQ 127.0.0.1:5672, .venv)"
