# The benchmark (bench/run.py). Included by the top-level Makefile; works alone too:
#   make -f mk/bench.mk bench
#
#   make bench                          the full run (200k requests per long-running server)
#   make bench BENCH_ARGS=--quick       a smoke run: tiny counts, every row
#   make bench-sandbox                  the per-connection unit's sandbox (bench/sandbox.py): the
#                                       units side by side in a booted container, about 15 min
#   make bench-sandbox BENCH_SANDBOX_ARGS=--quick      a smoke run of that
#   make bench-sandbox BENCH_SANDBOX_ARGS=--host-like  /proc with as few mounts as a host's
#   make bench-hostile                  `fingerd serve` attacked (bench/hostile.py, issue 15): the
#                                       code before the fixes and now, about 6 min, loopback
#   make bench-hostile BENCH_HOSTILE_ARGS=--quick      a smoke run of that
#   (FINGERD_DEB=path/to.deb: measure that package instead of building one.)
#
# Needs root: it installs its Debian packages, then measures in a private mount and network
# namespace (fingerd mounted as the .deb installs it, a journal socket of its own, loopback only).
# Twisted goes into a venv of the benchmark's own, and Debian's fingerd is fetched with
# `apt-get download` and unpacked there, not installed; both are kept in $(BENCH_CACHE).

BENCH_PYTHON := /usr/bin/python3
BENCH_CACHE ?= /var/cache/fingerd-bench
BENCH_ARGS ?=
# cc + libc6-dev: bench/spawn.c, bench/floor.c (static); systemd: systemd-socket-activate;
# util-linux: taskset, unshare; iproute2: the namespace's loopback; python3-build/-installer/
# -setuptools: the wheel, built and installed as pybuild does; finger: what in.fingerd runs;
# python3-uvloop: measured as an event-loop candidate; git: the list of files to build from;
# debootstrap, systemd-container: the booted container bench/sandbox.py measures the units in
# (tests/container.py).
BENCH_APT := gcc libc6-dev systemd util-linux iproute2 python3 python3-venv python3-pip \
	python3-build python3-installer python3-setuptools python3-wheel python3-uvloop finger git \
	debootstrap systemd-container
BENCH_SANDBOX_ARGS ?=
BENCH_HOSTILE_ARGS ?=

.PHONY: bench bench-sandbox bench-hostile bench-deps

bench: bench-deps
	$(BENCH_PYTHON) bench/run.py --cache $(BENCH_CACHE) $(BENCH_ARGS)

bench-sandbox: bench-deps
	$(BENCH_PYTHON) bench/sandbox.py $(BENCH_SANDBOX_ARGS)

# Needs git (the old code comes from this repository's history) and python3 only; as root the
# servers run as nobody, as under systemd.
bench-hostile:
	$(BENCH_PYTHON) bench/hostile.py $(BENCH_HOSTILE_ARGS)

bench-deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench: needs root (see mk/bench.mk)"; exit 2; fi
	@missing=$$(for p in $(BENCH_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
