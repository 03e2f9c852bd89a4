# Kezek: `make run` starts the whole system with a demo region, `make test` runs every test.
# Both first run deploy/bootstrap.sh, which installs and starts what is missing (Debian, as root).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
KEZEK := $(VENV)/bin/kezek
NAMEKO_RUN := $(VENV)/bin/nameko run --config config.yaml
SERVICES := registry applications queue allocation audit gateway
SERVICE_MODULES := $(foreach s,$(SERVICES),services.$(s).service)
PIDS := var/run-scaled.pids

.PHONY: help bootstrap bootstrap-test prepare run run-scaled test bench chaos lint clean distclean

help:
	@echo "make run         every service in one process, demo region loaded, gateway on 127.0.0.1:8000"
	@echo "make run-scaled  one process per service, allocation and gateway twice (ports 8000, 8001)"
	@echo "make test        every test (unit, integration, end to end, browser)"
	@echo "make bench       every tests/bench/*.py in turn"
	@echo "make chaos       the tests in tests/chaos"
	@echo "make lint        ruff, if installed"
	@echo "make clean       remove caches and run-time files (distclean: also .venv)"

bootstrap:
	@bash deploy/bootstrap.sh

# the browser tests need Debian's Chromium and ChromeDriver
bootstrap-test:
	@bash deploy/bootstrap.sh --browser

# schemas, queues and the demo region (the loader is deterministic for a seed)
prepare: bootstrap
	@mkdir -p var
	$(KEZEK) migrate
	$(KEZEK) demo load --scale small --seed 1

# exec: nameko replaces the recipe's shell, so Ctrl-C and SIGTERM reach it directly
run: prepare
	exec $(NAMEKO_RUN) $(SERVICE_MODULES)

# One `nameko run` per service instance, in the background, their pids in var/run-scaled.pids.
# Extra instances get metrics port 0 (off) and the second gateway port 8001. Waits until
# Ctrl-C (or until any instance exits), then sends SIGTERM to all and waits for them to stop.
run-scaled: prepare
	@mkdir -p var
	@for pid in $$(cat $(PIDS) 2>/dev/null); do \
	    if kill -0 $$pid 2>/dev/null; then \
	        echo "run-scaled: already running (pid $$pid in $(PIDS))" >&2; exit 1; fi; \
	done
	@: > $(PIDS); \
	start() { \
	    local service=$$1; shift; \
	    env "$$@" $(NAMEKO_RUN) services.$$service.service & \
	    echo $$! >> $(PIDS); \
	    echo "run-scaled: $$service $$* (pid $$!)"; \
	}; \
	stop() { \
	    trap - INT TERM; \
	    echo "run-scaled: stopping $$(wc -l < $(PIDS)) processes"; \
	    kill -TERM $$(cat $(PIDS)) 2>/dev/null; \
	    wait; \
	    rm -f $(PIDS); \
	}; \
	trap 'stop; exit 130' INT TERM; \
	start registry; \
	start applications; \
	start queue; \
	start allocation; \
	start allocation KEZEK_METRICS_ALLOCATION=0; \
	start audit; \
	start gateway KEZEK_GATEWAY_ADDRESS=127.0.0.1:8000; \
	start gateway KEZEK_GATEWAY_ADDRESS=127.0.0.1:8001 KEZEK_METRICS_GATEWAY=0; \
	wait -n; rc=$$?; \
	echo "run-scaled: a process exited (status $$rc)" >&2; \
	stop; exit 1

# pytest exits 5 when it collected no tests: that must never look like a green run
test: bootstrap-test
	@$(PY) -m tests.leftovers
	@rc=0; $(PY) -m pytest -q -p no:cacheprovider tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo "make test: FAILED: pytest collected no tests (exit status 5)" >&2; \
	fi; \
	exit $$rc

# every tests/bench/*.py script (floors first), then one table of figures against their floors;
# BENCH_ARGS="--only floors queue_lookup" or "--skip growth" chooses (see tests/bench/README.md)
bench: bootstrap
	@mkdir -p var
	PYTHONPATH=. $(PY) tests/bench/run_all.py --json var/bench.json $(BENCH_ARGS)

# The long fault test: a 90 s storm, RabbitMQ and PostgreSQL restarted once each (they are
# shared by everything on this machine). `make test` runs a 20 s version that only kills service
# processes. KEZEK_CHAOS_SECONDS / KEZEK_CHAOS_KILL_EVERY / KEZEK_CHAOS_INFRA=0 override.
chaos: bootstrap
	@KEZEK_CHAOS_SECONDS=$${KEZEK_CHAOS_SECONDS:-90} KEZEK_CHAOS_INFRA=$${KEZEK_CHAOS_INFRA:-1} \
	    $(PY) -m pytest -q -s -p no:cacheprovider tests/chaos

lint:
	@if [ -x $(VENV)/bin/ruff ]; then $(VENV)/bin/ruff check .; \
	elif command -v ruff >/dev/null; then ruff check .; \
	else echo "make lint: ruff is not installed ($(VENV)/bin/pip install ruff)"; fi

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache build test-artifacts *.egg-info var

distclean: clean
	rm -rf $(VENV)
