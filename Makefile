# flumed developer targets. `make test` and `make run` install what they need themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test slow fleet lint format bench cov clean install-systemd docs

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
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format flumed tests
	$(VENV)/bin/ruff check --fix flumed tests

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow"

# The long-running integration tests (100,000 messages through real brokers with SIGKILLs,
# the file channel's random-kill soak): run by .ci/run after `make test`.
slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Agents on network namespaces with partitions, loss and restarts (tests/fleet; needs root,
# iproute2, util-linux logger, and iptables for the lossy-link test; skips without them).
fleet: $(STAMP)
	$(PY) -m pytest -q tests/fleet

# Rewrites docs/reference/*.md from the components' key declarations.
docs: $(STAMP)
	$(PY) -m flumed.docgen

bench: $(STAMP)
	$(PY) -m tests.bench

cov: $(STAMP)
	$(PY) -m pytest -q --cov=flumed

# Installs the systemd units, /etc/default/flumed and an example config (run as root).
# FLUMED_BIN is the installed `flumed` command: a system-wide install (pip/pipx into
# /usr/local or /opt), not a venv under /root or /home, which the units hide
# (ProtectHome=yes). DESTDIR installs into a staging tree (packaging, tests).
FLUMED_BIN ?= /usr/local/bin/flumed
DESTDIR ?=
install-systemd:
	install -d $(DESTDIR)/etc/flumed $(DESTDIR)/etc/default $(DESTDIR)/etc/systemd/system
	[ -f $(DESTDIR)/etc/flumed/flumed.toml ] || \
		install -m 0644 conf/single-agent.toml $(DESTDIR)/etc/flumed/flumed.toml
	[ -f $(DESTDIR)/etc/default/flumed ] || \
		install -m 0644 systemd/flumed.default $(DESTDIR)/etc/default/flumed
	for unit in flumed.service flumed@.service; do \
		sed 's#/usr/local/bin/flumed#$(FLUMED_BIN)#g' systemd/$$unit \
			> $(DESTDIR)/etc/systemd/system/$$unit && \
		chmod 0644 $(DESTDIR)/etc/systemd/system/$$unit || exit 1; \
	done
	[ -n "$(DESTDIR)" ] || systemctl daemon-reload || true

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
