VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the browser tests, from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/cancel-flow demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
