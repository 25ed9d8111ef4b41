# flumed developer targets. `make test` and `make run` install what they need themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv install run test slow fleet lint format bench cov clean install-systemd docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The development venv (.venv) with the test extras; `make test` and `make run` make it.
venv: $(STAMP)

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

# `make install` (as root): a venv in $(PREFIX) with flumed in it, the systemd units
# pointing at $(PREFIX)/bin/flumed, /etc/flumed/flumed.toml and /etc/default/flumed (both
# kept when present). Needs Python 3.11 or newer ($(PYTHON)). DESTDIR installs into a
# staging tree (packaging, tests); the units always name the final path.
PREFIX ?= /opt/flumed
FLUMED_BIN ?= $(PREFIX)/bin/flumed
DESTDIR ?=
install:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "flumed needs Python 3.11 or newer; $(PYTHON) is older (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install --quiet --upgrade pip
	$(DESTDIR)$(PREFIX)/bin/python -m pip install --quiet .
	$(MAKE) --no-print-directory install-systemd DESTDIR=$(DESTDIR) FLUMED_BIN=$(FLUMED_BIN)

# The units, /etc/default/flumed and an example config only, for a flumed installed
# elsewhere: FLUMED_BIN must be an executable `flumed` (a system-wide install, not a venv
# under /root or /home, which the units hide with ProtectHome=yes).
install-systemd:
	@[ -x "$(DESTDIR)$(FLUMED_BIN)" ] || [ -x "$(FLUMED_BIN)" ] || \
		{ echo "FLUMED_BIN=$(FLUMED_BIN) is not an executable flumed: run 'make install'," \
		"or set FLUMED_BIN to the installed flumed command" >&2; exit 1; }
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
