# `make run` and `make ui` install what the main job needs into .venv first (the package alone); `make test`,
# `make check` and `make lint` add the test tools and the bench extra (Ray, Playwright, moto, schemathesis).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Packages are installed by uv (pinned in requirements.lock, put in each environment by its pip first): about 4x
# faster than pip here (BENCHMARKS.md, "Test suite"); both keep their downloads in ~/.cache between runs. uv compiles
# the packages' bytecode at install time (pip did, uv does not by default): otherwise the first process to import
# TensorFlow, Dagster or Spark in a fresh environment compiles them, a run's or a test's time.
export UV_COMPILE_BYTECODE := 1
$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c requirements.lock uv
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -c requirements.lock -e .
	$(MAKE) jars
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -c requirements.lock -e '.[dev,bench]'
	touch $(DEV_STAMP)

.PHONY: install install-dev jars run ui test check lint
install: $(STAMP)
install-dev: $(DEV_STAMP)

# Spark's JVM packages that pyspark lacks (Delta Lake, the S3A connector), checked by SHA-256 and kept in
# ~/.cache/fruits/jars between runs and clones (spark_code/jvm_packages.py); a session fetches any still missing.
# Then the archive of the classes a driver loads, in .venv/share/fruits (spark_code/jvm_class_archive.py, ~30 s).
jars:
	$(VENV)/bin/python -m spark_code.jvm_packages
	$(VENV)/bin/python -m spark_code.jvm_class_archive

run: $(STAMP)
	$(VENV)/bin/fruits run $(ARGS)

# The Dagster UI on the instance `fruits run` records its runs in (DAGSTER_HOME, default ./.dagster_home).
ui: $(STAMP)
	mkdir -p $${DAGSTER_HOME:-$(CURDIR)/.dagster_home}
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(VENV)/bin/dagster dev -w workspace.yaml

# requirements.lock pins EMR 7's Spark (3.5.5) and the packages the bootstrap puts on every node
# (tests/emr_config/test_requirements.py), so the suite runs spark_code as the cluster does.
test: $(DEV_STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The inner loop's fast tier (about 2 minutes): lint, then every test not marked slow (tests/conftest.py marks
# those that start Spark, a cluster, a server or the main job).
check: $(DEV_STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -m "not slow and not ui" $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
