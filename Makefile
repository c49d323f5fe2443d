# Every target creates .venv first when it is missing.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# make run: ports, addresses and paths (override on the command line or in the environment)
VAR_DIR ?= ./var
CONFIG ?= config/gateway.toml
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5001
GATEWAY_HOST ?= 127.0.0.1
GATEWAY_PORT ?= 8000
# The Open Inference Protocol over gRPC; GRPC_PORT= (empty) turns it off
GRPC_PORT ?= 8001
MLFLOW_WORKERS ?= 2

.PHONY: install run test test-fast bench bench-report replicas lint clean system-deps

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# Debian packages: wrk (benchmark), chromium (the report's browser check), prometheus, haproxy (replicas),
# and a Java runtime for the report's Spark engine (pyspark 4 needs Java 17+) where none is installed.
system-deps:
	if ! command -v wrk >/dev/null || ! command -v chromium >/dev/null || ! command -v prometheus >/dev/null \
	   || ! command -v haproxy >/dev/null || ! command -v java >/dev/null || ! command -v h2load >/dev/null; then
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo )
	  $$SUDO apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk chromium prometheus haproxy nghttp2-client >/dev/null
	  command -v java >/dev/null || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq default-jre-headless >/dev/null
	fi

# The recipe runs silently (@ on its first line, one shell): it says what it starts and where.
run: $(STAMP)
	@mkdir -p $(VAR_DIR)/mlflow
	export MLFLOW_TRACKING_URI=http://$(MLFLOW_HOST):$(MLFLOW_PORT)
	# A VAR_DIR given to make holds everything the run writes: MLflow's files, the spool and the model
	# cache (the default ./var is the shipped config's own place for them).
	if [ "$(origin VAR_DIR)" != file ]; then
	  export GATEWAY_SPOOL__DIR=$${GATEWAY_SPOOL__DIR:-$(VAR_DIR)/spool}
	  export GATEWAY_MLFLOW__MODEL_CACHE_DIR=$${GATEWAY_MLFLOW__MODEL_CACHE_DIR:-$(VAR_DIR)/model-cache}
	fi
	if [ -n "$(GRPC_PORT)" ]; then
	  export GATEWAY_GRPC__PORT=$${GATEWAY_GRPC__PORT:-$(GRPC_PORT)} GATEWAY_GRPC__HOST=$${GATEWAY_GRPC__HOST:-$(GATEWAY_HOST)}
	fi
	export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # its 8 background worker processes are not used here
	# Own process group for the MLflow server so that one signal stops it and its workers.
	setsid $(VENV)/bin/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS) \
	  --backend-store-uri sqlite:///$$(realpath $(VAR_DIR))/mlflow/mlflow.db \
	  --artifacts-destination $$(realpath $(VAR_DIR))/mlflow/artifacts > $(VAR_DIR)/mlflow/server.log 2>&1 &
	mlflow_pid=$$!
	gateway_pid=
	stop() {
	  trap - INT TERM EXIT
	  [ -n "$$gateway_pid" ] && kill -TERM $$gateway_pid 2>/dev/null && wait $$gateway_pid 2>/dev/null || true
	  if kill -TERM -- -$$mlflow_pid 2>/dev/null; then
	    wait $$mlflow_pid 2>/dev/null || true
	    echo "stopped the gateway and the MLflow server it started"
	  else
	    echo "stopped the gateway; the MLflow server make run started had exited already (one started by hand" \
	         "is not stopped)"
	  fi
	}
	trap stop EXIT
	# Ctrl-C or a TERM is a requested stop, not a failure: the recipe ends with status 0, so make
	# reports no error. A gateway that exits by itself still fails the target (the wait below).
	trap 'exit 0' INT TERM
	echo "MLflow server starting on $$MLFLOW_TRACKING_URI (log: $(VAR_DIR)/mlflow/server.log)"
	for i in $$(seq 1 120); do
	  curl -fsS $$MLFLOW_TRACKING_URI/health >/dev/null 2>&1 && break
	  kill -0 $$mlflow_pid 2>/dev/null || { echo "MLflow server exited; see $(VAR_DIR)/mlflow/server.log"; exit 1; }
	  sleep 0.5
	done
	$(PY) -m models.train
	$(PY) -m gateway --config $(CONFIG) --host $(GATEWAY_HOST) --port $(GATEWAY_PORT) &
	gateway_pid=$$!
	echo "gateway starting on http://$(GATEWAY_HOST):$(GATEWAY_PORT)$${GATEWAY_GRPC__PORT:+ (gRPC: $$GATEWAY_GRPC__HOST:$$GATEWAY_GRPC__PORT)}; in another shell:"
	echo "  export MLFLOW_TRACKING_URI=$$MLFLOW_TRACKING_URI$${GATEWAY_SPOOL__DIR:+ GATEWAY_SPOOL__DIR=$$GATEWAY_SPOOL__DIR}"
	echo "  $(PY) -m experiments.traffic --url http://$(GATEWAY_HOST):$(GATEWAY_PORT) -n 2000 --feedback"
	echo "  $(PY) -m experiments.compare --wait 300 --html report.html"
	wait $$gateway_pid

# The unit and property tests (the architecture's import checks among them) on both cores; the
# integration tests (real MLflow servers and gateways) two modules at a time, each module on one core
# (its tests share its MLflow server); then the slow fault tests (SIGKILL, outages, full disks, timing
# under load) one at a time, so that no other test's load skews them.
test: $(STAMP) system-deps
	$(PY) -m pytest -q -m "not integration" -n 2
	$(PY) -m pytest -q -m "integration and not slow" -n 2 --dist loadfile --durations=10
	$(PY) -m pytest -q -m "integration and slow" --durations=10

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration" -n 2

bench: $(STAMP) system-deps
	$(PY) -m experiments.bench
	$(PY) -m experiments.bench.grpc_serving
	$(PY) -m experiments.bench.tree_threads
	$(PY) -m experiments.bench.table_files
	$(PY) -m experiments.bench.cpu_cost

# The report at scale: a million window-mode predictions through the exporter, then one report.
bench-report: $(STAMP) system-deps
	$(PY) -m experiments.bench.report_scale
	$(PY) -m experiments.bench.report_engines

# Three gateway replicas behind HAProxy with the routing state in MLflow (PostgreSQL on 127.0.0.1:5432),
# Prometheus and the rollout controller: a weight change, a SIGKILL under load, a rollback.
replicas: $(STAMP) system-deps
	mkdir -p $(VAR_DIR)
	$(PY) -m experiments.bench.replicas --json $(VAR_DIR)/replicas.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VAR_DIR) .pytest_cache .hypothesis
