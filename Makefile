# flumed developer targets. `make test` and `make run` install what they need themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format bench cov clean install-systemd

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/flumed agent -f flumed/default.toml -n a1 --metrics-port 41414

lint: $(STAMP)
	$(VENV)/bin/ruff check flumed tests
	$(VENV)/bin/ruff format --check flumed tests

format: $(STAMP)
	$(VENV)/bin/ruff format flumed tests
	$(VENV)/bin/ruff check --fix flumed tests

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m tests.bench

cov: $(STAMP)
	$(PY) -m pytest -q --cov=flumed

# Installs the systemd units and an example config (run as root).
install-systemd:
	install -d /etc/flumed
	[ -f /etc/flumed/a1.toml ] || install -m 0644 conf/single-agent.toml /etc/flumed/a1.toml
	install -m 0644 systemd/flumed.service systemd/flumed@.service /etc/systemd/system/
	-systemctl daemon-reload

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
