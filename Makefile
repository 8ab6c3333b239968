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

# Debian packages `make run` needs: the interpreter and its venv module, python3-systemd (journal
# records), python3-h11 (`fingerd web`).
RUN_PACKAGES := python3 python3-venv python3-systemd python3-h11
# ... and the tests: the real finger client, systemd-socket-activate, unshare/ip for a private
# network namespace, faketime to run finger at a fixed time (tests/capture_finger.py), openssl
# for test certificates, python3-build/-installer/-setuptools/-wheel: the import-cost and plugin
# tests build a wheel and install it as pybuild does (tests/backend_fixtures.py). ngircd is the
# IRC server of the bot's tests, which start their own in a network namespace of their own (its
# postinst starts a system one on port 6667 where it can; the tests neither use it nor meet it).
# chromium (large) for the web view's browser tests. (The container and the benchmark bring
# theirs: mk/deb.mk, mk/bench.mk.)
APT_PACKAGES := $(RUN_PACKAGES) python3-wheel finger systemd iproute2 util-linux openssl \
	ca-certificates faketime python3-build python3-installer python3-setuptools ngircd chromium

.PHONY: all run check test test-assets lint deps apt-deps run-deps clean

all: check

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $@

apt-deps run-deps: PACKAGES = $(if $(filter run-deps,$@),$(RUN_PACKAGES),$(APT_PACKAGES))
apt-deps run-deps:
ifeq ($(ROOT),yes)
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
else
	@echo "not root: not installing Debian packages ($(PACKAGES)); tests that need them skip"
endif

deps: apt-deps e2e-deps $(VENV)/.ready

# Finger on 1079 and the web view on http://localhost:8079/, the same answers; Ctrl-C stops
# both (the web server, started in the background, is stopped when the recipe's shell exits).
run: run-deps $(VENV)/.ready
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
test: deps test-assets
	DEB_BUILD_OPTIONS=nocheck $(MAKE) deb
	FINGERD_DEB=$(CURDIR)/$(DEBPKG_DEB) $(VPY) -m pytest

# What the tests would otherwise download themselves: the booted-container tests' bookworm
# image (debootstrap) and the benchmark's peers (Twisted from PyPI, Debian's in.fingerd). Made
# here, before pytest, so that the tests talk to loopback and their own namespaces only.
test-assets:
ifeq ($(ROOT),yes)
	$(PYTHON) tests/container.py
	$(MAKE) -f mk/bench.mk bench-deps
	$(PYTHON) bench/run.py --setup
else
	@echo "not root: the container image and the benchmark's peers are not prepared"
endif

check: lint test lint-deb deb-offline

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# `make deb`, `make lint-deb`, `make e2e-deps`: the Debian package and its end-to-end test.
include mk/deb.mk

# `make bench`: the benchmark suite (bench/, README.md, "Performance").
include mk/bench.mk
