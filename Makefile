# fingerd: `make run` serves the example config on port 1079 (finger) and 8079 (the web view);
# `make check` runs every test.
# Both set up what they need on a fresh Debian bookworm machine (apt packages when root).

SHELL := /bin/bash
# Debian's interpreter, named by path: the product runs on it, and `python3` on PATH may be
# something else (a pyenv shim here).
PYTHON := /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

# Debian packages the tests use: the real finger client, systemd-socket-activate, unshare/ip
# for a private network namespace, python3-systemd for journal records, faketime to run finger
# at a fixed time (tests/capture_finger.py), the tools that build and boot the packaging test's
# container, and python3-build/-installer/-setuptools: the import-cost tests build the wheel and
# install it as pybuild does (tests/backend_fixtures.py). ngircd is the IRC server of the bot's
# tests, which start their own in a network namespace of their own (its postinst starts a
# system one on port 6667 where it can; the tests neither use it nor meet it). python3-h11 for
# `fingerd web`, chromium (large) for the web view's browser tests.
APT_PACKAGES := python3 python3-venv python3-wheel python3-systemd python3-h11 finger systemd \
	iproute2 util-linux openssl ca-certificates faketime python3-build python3-installer \
	python3-setuptools ngircd chromium

.PHONY: all run check test lint deps apt-deps clean

all: check

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $@

apt-deps:
ifeq ($(ROOT),yes)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
else
	@echo "not root: not installing Debian packages ($(APT_PACKAGES)); tests that need them skip"
endif

deps: apt-deps e2e-deps $(VENV)/.ready

# Finger on 1079 and the web view on http://localhost:8079/, the same answers; Ctrl-C stops
# both (the web server, started in the background, is stopped when the recipe's shell exits).
run: apt-deps $(VENV)/.ready
	@trap 'kill $$web 2>/dev/null; wait $$web' EXIT; \
	$(VPY) -m fingerd web --config examples/fingerd.toml --listen 127.0.0.1:8079 \
		--listen '[::1]:8079' $(if $(ROOT),--user nobody) & web=$$!; \
	echo "finger: printf 'moshez\\r\\n' | nc localhost 1079   web: http://localhost:8079/moshez"; \
	$(VPY) -m fingerd serve --config examples/fingerd.toml --listen 127.0.0.1:1079 \
		--listen '[::1]:1079' $(if $(ROOT),--user nobody)

lint: deps
	$(VENV)/bin/ruff check fingerd tests bench
	$(VENV)/bin/mypy

# The end-to-end tests (and debian/tests, through autopkgtest) install the .deb built here into
# a booted container. nocheck: pytest runs the whole suite right after; the package build's own
# run of the tests, as a buildd does it, is `make deb-offline`.
test: deps
	DEB_BUILD_OPTIONS=nocheck $(MAKE) deb
	FINGERD_DEB=$(CURDIR)/$(DEBPKG_DEB) $(VPY) -m pytest

check: lint test lint-deb deb-offline

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# `make deb`, `make lint-deb`, `make e2e-deps`: the Debian package and its end-to-end test.
include mk/deb.mk

# `make bench`: the benchmark suite (bench/, README.md, "Performance").
include mk/bench.mk
