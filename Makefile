VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench browser screenshots clean

# The clients' languages: each catalog's .po (the source, in git) compiled to the .mo the pages read.
LOCALES := cancel_flow/locales
CATALOGS := $(patsubst %.po,%.mo,$(wildcard $(LOCALES)/*/LC_MESSAGES/messages.po))

install: $(STAMP) $(CATALOGS)

$(STAMP): pyproject.toml package.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm install --no-audit --no-fund --silent
	touch $(STAMP)

$(LOCALES)/%/LC_MESSAGES/messages.mo: $(LOCALES)/%/LC_MESSAGES/messages.po $(STAMP)
	$(VENV)/bin/pybabel compile --domain messages --directory $(LOCALES) --locale $* --statistics

# Headless Chromium for the browser tests, from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The whole suite on SQLite, then again on PostgreSQL when TEST_DATABASE_URL answers
# (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test). REQUIRE_POSTGRES=1 makes a
# missing PostgreSQL an error instead of a skip.
# TEST_WORKERS: pytest-xdist processes (each with its own emulator and its own database); 0 runs in one process.
TEST_WORKERS ?= 2
test: install browser
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)
	@if [ -n "$$TEST_DATABASE_URL" ] && $(PY) -c "import os, sqlalchemy as sa; sa.create_engine(os.environ['TEST_DATABASE_URL']).connect().close()" 2>/dev/null; then \
		echo "== The same suite on PostgreSQL ($$TEST_DATABASE_URL)"; \
		$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); \
	elif [ -n "$$REQUIRE_POSTGRES" ]; then \
		echo "PostgreSQL is required (REQUIRE_POSTGRES=1) but TEST_DATABASE_URL='$$TEST_DATABASE_URL' does not answer."; exit 1; \
	else \
		echo "== SKIPPED the PostgreSQL half: set TEST_DATABASE_URL to a PostgreSQL URL that answers to run it."; \
	fi

# The Stripe contract tests against Stripe test mode (SPEC §12): STRIPE_TEST_SECRET_KEY=sk_test_… make test-stripe.
# Each test makes its objects on test clocks or deletes them afterwards; the tests that need the
# emulator's own controls are skipped, each with its reason. Without the key the tests run in `make test`,
# against the emulator.
CONTRACT_TESTS := tests/test_emulator.py tests/test_emulator_billing.py tests/test_emulator_rules.py tests/test_emulator_money.py \
                  tests/test_emulator_refunds.py
.PHONY: test-stripe
test-stripe: install
	@if [ -z "$$STRIPE_TEST_SECRET_KEY" ]; then \
		echo "make test-stripe needs STRIPE_TEST_SECRET_KEY: a Stripe test-mode secret key (sk_test_…) from https://dashboard.stripe.com/test/apikeys"; \
		exit 2; \
	fi
	$(PY) -m pytest $(CONTRACT_TESTS) --stripe-test-mode -rs $(PYTEST_ARGS)

# Benchmarks (not part of the suite): wrk and valgrind from Debian's packages; PostgreSQL figures when
# BENCH_POSTGRES_URL answers (default: the local test database). QUICK=1 for a short run.
BENCH_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
bench: install
	@command -v wrk >/dev/null 2>&1 && command -v valgrind >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq wrk valgrind >/dev/null)
	BENCH_POSTGRES_URL=$(BENCH_POSTGRES_URL) $(PY) -m bench.run $(if $(QUICK),--quick,)
	$(PY) -m bench.experiments_sim $(if $(QUICK),--quick,)

demo: install
	$(VENV)/bin/cancel-flow demo

# Every page at 360 px and 1280 px as PNGs in $(SCREENSHOTS)/360 and $(SCREENSHOTS)/1280 (not committed), for a
# person to review the look in a minute; the same run checks each page for overflow and axe violations.
SCREENSHOTS ?= screenshots
screenshots: install browser
	rm -rf $(SCREENSHOTS)
	SCREENSHOTS_DIR=$(abspath $(SCREENSHOTS)) $(PY) -m pytest tests/test_screens.py -q -p no:cacheprovider -k "every"
	@echo "Screenshots: $(abspath $(SCREENSHOTS))/360 and $(abspath $(SCREENSHOTS))/1280"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# The container image built and run with compose.yaml for real (tests/image/run.py): podman with runc and
# netavark (which needs iptables), podman-compose and debootstrap from Debian's packages, installed here when
# missing. Needs root; keeps its Debian base in .cache/image/ and podman's store; leaves no container running.
# .ci/run calls it after `make test`.
IMAGE_TOOLS := podman runc netavark aardvark-dns iptables podman-compose debootstrap
.PHONY: test-image
test-image: install
	@dpkg -s $(IMAGE_TOOLS) >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_TOOLS) >/dev/null)
	$(PY) tests/image/run.py

# requirements.txt: the container image's dependencies, pinned with their hashes for Python 3.11 and newer on
# every platform, resolved from pyproject.toml (plus setuptools, which builds the package in the image).
# Run `make lock` after changing the dependencies: tests/test_requirements.py fails until then.
UV_VERSION := 0.13.9
.PHONY: lock
lock:
	@test -x .cache/uv/bin/uv || (python3 -m venv .cache/uv && .cache/uv/bin/pip install --quiet uv==$(UV_VERSION))
	{ echo "# The container image's dependencies, pinned with their hashes (Containerfile). Made by \`make lock\` from"; \
	  echo "# pyproject.toml; setuptools only builds the package and is removed from the image after."; \
	  python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' | \
	  UV_NATIVE_TLS=1 .cache/uv/bin/uv pip compile pyproject.toml - --universal --python-version 3.11 \
	    --generate-hashes --no-header --quiet; } > requirements.txt.new
	mv requirements.txt.new requirements.txt
