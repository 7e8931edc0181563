# The project's vocabulary. Every variable can be set by the caller (`?=`): the caller wins.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION ?= 0.13.9

# Warehouse configuration (README "Configuration"). Exported so dbt, Dagster and Python see it.
# Recipes read CW_* values from the environment ("$$CW_RAW_DIR"), never as make text
# ($(CW_RAW_DIR)): a value with quotes or $(...) is data, not shell code.
DEMO_DIR ?= $(CURDIR)/data/demo
export CW_RAW_DIR ?= $(DEMO_DIR)
export CW_WAREHOUSE_PATH ?= $(CURDIR)/data/warehouse.duckdb
export CW_AS_OF_DATE ?=
export DBT_PROFILES_DIR ?= $(CURDIR)

# Demo data
DEMO_CUSTOMERS ?= 5000
DEMO_SEED ?= 42
DEMO_DIRTY_RATE ?= 0.003
DEMO_FORMAT ?= csv

# Tests: extra pytest arguments, e.g. make test PYTEST_ARGS="-k staging"
PYTEST_ARGS ?=

.PHONY: rebuild backfill report config help install lock ensure-raw-data demo-data run run-full-refresh test test-heavy lint format docs metrics bench dev clean dagster-home dagster-validate dagster-materialize

config:  ## print the effective configuration (environment wins over defaults)
	@printf 'CW_RAW_DIR=%s\n' "$$CW_RAW_DIR"
	@printf 'CW_WAREHOUSE_PATH=%s\n' "$$CW_WAREHOUSE_PATH"
	@printf 'CW_AS_OF_DATE=%s\n' "$$CW_AS_OF_DATE"
	@env | grep '^CW_RAW_ENCODING' || echo "CW_RAW_ENCODING=auto (unset)"
	@echo "CW_POOL_WAIT_TIMEOUT=$${CW_POOL_WAIT_TIMEOUT:-1800 (unset: default)}"
	@echo "CW_SERVING_DIR=$${CW_SERVING_DIR:-$$(dirname -- "$$CW_WAREHOUSE_PATH")/serving}"
	@echo "CW_SERVING_KEEP=$${CW_SERVING_KEEP:-3}"
	@echo "CW_MAX_RAW_AGE_HOURS=$${CW_MAX_RAW_AGE_HOURS:-36 (unset: default)}"
	@echo "CW_ALERT_LOG=$${CW_ALERT_LOG:-$$(dirname -- "$$CW_WAREHOUSE_PATH")/alerts.jsonl}"
	@echo "CW_ALERT_WEBHOOK_URL=$${CW_ALERT_WEBHOOK_URL:-(unset: log file only)}"
	@echo "CW_DUCKDB_MEMORY_LIMIT=$${CW_DUCKDB_MEMORY_LIMIT:-80% (unset: DuckDB default)}"
	@echo "CW_DUCKDB_TEMP_DIR=$${CW_DUCKDB_TEMP_DIR:-$$CW_WAREHOUSE_PATH.tmp (unset: DuckDB default)}"

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# --compile-bytecode: every library is compiled to .pyc once here, not at each start of a
# process that cannot write its own cache (PYTHONDONTWRITEBYTECODE, a read-only venv): about
# half of a small run's start-up CPU (docs/benchmarks.md, "Start-up cost").
$(BIN)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(BIN)/.installed  ## create .venv from requirements.lock

lock:  ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--generate-hashes --quiet -o requirements.lock

demo-data: install  ## generate demo data into data/demo (DEMO_CUSTOMERS, DEMO_SEED, ...)
	$(BIN)/python -m customer_warehouse.demo --out $(DEMO_DIR) \
		--customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED) \
		--dirty-rate $(DEMO_DIRTY_RATE) --format $(DEMO_FORMAT)

# Demo data is generated only when the caller did not point CW_RAW_DIR elsewhere.
ensure-raw-data: install
	@if [ "$$CW_RAW_DIR" = "$(DEMO_DIR)" ] && [ ! -e "$(DEMO_DIR)/orders.csv" ] \
		&& [ ! -e "$(DEMO_DIR)/orders.parquet" ]; then $(MAKE) --no-print-directory demo-data; fi

# Dagster (docs/orchestration.md). `make run` and `make dev` share one instance folder: run
# history, sensor cursors and the DuckDB writer pool. The caller's DAGSTER_HOME wins.
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DAGSTER_HOST ?= 127.0.0.1
DAGSTER_PORT ?= 3000
DAGSTER_MODULE ?= orchestration.definitions
DAGSTER := DAGSTER_HOME="$(DAGSTER_HOME)" $(BIN)/dagster
SELECT ?= *
# Optional run config (YAML) for `make run`, e.g. predictions options (docs/orchestration.md).
RUN_CONFIG ?=

.PHONY: dagster-home dagster-validate dagster-materialize

run: ensure-raw-data dagster-home  ## install, generate demo data if needed, build everything through Dagster
	@mkdir -p "$$(dirname "$$CW_WAREHOUSE_PATH")"
	$(DAGSTER) job execute -m $(DAGSTER_MODULE) -j full_refresh $(if $(RUN_CONFIG),-c $(RUN_CONFIG))

run-full-refresh: ensure-raw-data dagster-home  ## as `make run`, with `dbt build --full-refresh`: incremental models rebuilt from all raw rows
	@mkdir -p "$$(dirname "$$CW_WAREHOUSE_PATH")"
	$(DAGSTER) job execute -m $(DAGSTER_MODULE) -j full_refresh -c orchestration/run_config/full_refresh.yaml $(if $(RUN_CONFIG),-c $(RUN_CONFIG))

# A damaged warehouse file: set it aside (kept, timestamped) and build a new one from the raw
# files. Every run cleans up dead runs itself (orchestration/recovery/); so does this.
rebuild: ensure-raw-data dagster-home  ## move a damaged warehouse file aside and build it again from the raw files
	DAGSTER_HOME="$(DAGSTER_HOME)" $(BIN)/python -m orchestration.recovery --set-aside-warehouse
	$(MAKE) --no-print-directory run

# `dagster dev` reads [tool.dagster] in pyproject.toml: code location `customer_warehouse`.
# Runs that died before (a crash, a reboot) are failed and their writer-pool slots freed first;
# while it runs, the sensor dead_run_cleanup does that every 30 s (docs/orchestration.md).
dev: ensure-raw-data dagster-home  ## Dagster UI + daemon (schedule, sensors, freshness) on http://127.0.0.1:3000 (DAGSTER_HOST/_PORT)
	@mkdir -p "$$(dirname "$$CW_WAREHOUSE_PATH")"
	DAGSTER_HOME="$(DAGSTER_HOME)" $(BIN)/python -m orchestration.recovery
	$(DAGSTER) dev -h $(DAGSTER_HOST) -p $(DAGSTER_PORT)

# The instance settings (writer pool limit) come from orchestration/dagster.yaml. The project's
# own .dagster_home follows the template; a DAGSTER_HOME of the caller's keeps its dagster.yaml.
dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@if [ ! -e "$(DAGSTER_HOME)/dagster.yaml" ] \
		|| [ "$(DAGSTER_HOME)" = "$(CURDIR)/.dagster_home" ]; then \
		cp orchestration/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"; \
	elif ! cmp -s orchestration/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"; then \
		echo "note: $(DAGSTER_HOME)/dagster.yaml is yours and differs from" \
			"orchestration/dagster.yaml; make sure it sets concurrency.pools.default_limit: 1"; \
	fi

dagster-validate: install dagster-home  ## check that the Dagster definitions load (runs dbt parse if needed)
	$(DAGSTER) definitions validate -m $(DAGSTER_MODULE)

dagster-materialize: ensure-raw-data dagster-home  ## materialize a selection, e.g. SELECT='raw/survey_responses*'
	@mkdir -p "$$(dirname "$$CW_WAREHOUSE_PATH")"
	$(DAGSTER) asset materialize -m $(DAGSTER_MODULE) --select '$(SELECT)'

# The tier history's past as-of dates: a backfill of its Dagster partitions, one run
# (docs/tiers.md). The raw files are loaded in the same run, so it works on an empty warehouse.
BACKFILL_START ?=
BACKFILL_END ?=
BACKFILL_EVERY ?= auto
export BACKFILL_START BACKFILL_END BACKFILL_EVERY
BACKFILL_ASSETS ?= group:raw,marts/customer_tier_history,marts/customer_tiers_history,marts/customer_tier_transitions
backfill: ensure-raw-data dagster-home  ## tier history for past dates, one Dagster run: make backfill BACKFILL_START=2024-01-01 BACKFILL_END=2025-06-30
	@for name in BACKFILL_START BACKFILL_END; do \
		if [[ ! "$${!name}" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$$ ]]; then \
			echo "set $$name=YYYY-MM-DD: the first and last as-of date of the backfill," \
				"e.g. make backfill BACKFILL_START=2024-01-01 BACKFILL_END=2025-06-30"; exit 2; fi; done
	@case "$$BACKFILL_EVERY" in auto|day|month) ;; *) echo "BACKFILL_EVERY must be auto" \
		"(every day up to 92 days, else month ends), day or month"; exit 2;; esac
	@mkdir -p "$$(dirname "$$CW_WAREHOUSE_PATH")"
	$(DAGSTER) asset materialize -m $(DAGSTER_MODULE) --select '$(BACKFILL_ASSETS)' \
		--partition-range "$$BACKFILL_START...$$BACKFILL_END" \
		--config-json "{\"ops\": {\"tier_history\": {\"config\": {\"every\": \"$$BACKFILL_EVERY\"}}}}"

report: install  ## tier report with charts from the marts into reports/tier_report.html
	$(BIN)/python -m customer_warehouse.tier_report --out reports/tier_report.html

PYTEST_WORKERS ?= 2
test: install  ## install and run the suite (pytest: dbt builds, the Dagster job, linters), heavy tests aside
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope -m "not heavy" --durations=15 $(PYTEST_ARGS)

test-heavy: install  ## the heavy tests: Spark, the real Dagster webserver and daemon (CI runs both)
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m heavy --durations=10 $(PYTEST_ARGS)

# sqlfluff's dbt templater compiles the models; is_incremental() asks the database whether a
# table exists, so it gets an empty in-memory one (never the warehouse file).
lint: install  ## sqlfluff + ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	CW_WAREHOUSE_PATH=:memory: $(BIN)/sqlfluff lint models tests/dbt

format: install  ## fix what the linters can fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	CW_WAREHOUSE_PATH=:memory: $(BIN)/sqlfluff fix models tests/dbt

# make docs: the dbt docs site (every model, column, seed, macro, metric and exposure, with the
# lineage) generated from the built warehouse through the read-only target and served on
# http://127.0.0.1:$(DOCS_PORT) until Ctrl-C.
DOCS_PORT ?= 8580
docs: install  ## generate the dbt docs site and serve it on http://127.0.0.1:8580
	@test -f "$$CW_WAREHOUSE_PATH" || { echo "No warehouse at $$CW_WAREHOUSE_PATH: run \`make run\` first (or set CW_WAREHOUSE_PATH)." >&2; exit 2; }
	CW_DBT_TARGET=metrics $(BIN)/dbt docs generate
	CW_DBT_TARGET=metrics $(BIN)/dbt docs serve --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

# make metrics QUERY="--metrics revenue --group-by customer__value_tier": a MetricFlow query
# (models/semantic/, docs/metrics.md) against the built warehouse, read-only (target `metrics`).
QUERY ?= --metrics revenue,orders,average_order_value --group-by customer__value_tier
metrics: install  ## answer a metric query: make metrics QUERY="--metrics revenue --group-by ..."
	@test -f "$$CW_WAREHOUSE_PATH" || { echo "No warehouse at $$CW_WAREHOUSE_PATH: run \`make run\` first (or set CW_WAREHOUSE_PATH)." >&2; exit 2; }
	@CW_DBT_TARGET=metrics $(BIN)/dbt parse --quiet
	CW_DBT_TARGET=metrics $(BIN)/mf query $(QUERY)

# make bench: the whole job at several scales against the floor (docs/benchmarks.md).
# BENCH_SCALES: orders, e.g. `make bench BENCH_SCALES=100k` for a quick run; BENCH_LARGE=1 adds
# 50M orders (with BENCH_MEMORY_LIMIT and a temporary folder under BENCH_WORK).
export BENCH_SCALES ?= 100k 1m 10m
export BENCH_LARGE ?=
export BENCH_WORK ?= /tmp/cw-bench
export BENCH_MEMORY_LIMIT ?= 8GB
bench: install  ## speed and memory at several scales vs. the floor; writes docs/benchmarks.md
	$(BIN)/python benchmarks/bench_warehouse.py --scales $$BENCH_SCALES \
		$$(case "$$BENCH_LARGE" in 1|yes|true) echo --scales 50m;; esac) \
		--work "$$BENCH_WORK" --memory-limit "$$BENCH_MEMORY_LIMIT" --keep
	$(BIN)/python benchmarks/bench_loyalty.py --warehouse "$$BENCH_WORK/scale-$$(echo $$BENCH_SCALES | awk '{print $$NF}')/warehouse.duckdb"

clean:  ## remove generated files (keeps .venv)
	rm -rf target logs data reports .dagster_home
