# The Debian package. Included by the top-level Makefile; works alone too: make -f mk/deb.mk deb
#
#   make deb        install the build dependencies (as root), build dist/fingerd_<version>_all.deb
#   make lint-deb   lintian on the .deb and the .changes: fails on any error or warning
#   make e2e-deps   install what tests/test_systemd_e2e.py needs on the host (as root)
#   make deb-offline  the package build as a buildd runs it (as root; part of `make check`)
#
# dpkg-buildpackage writes into the parent directory; the results are moved into $(DEBPKG_DIST)
# and the tree is cleaned afterwards (--post-clean), so a build leaves nothing behind but dist/.

# bash, for `make -f mk/deb.mk` alone too (the top-level Makefile sets it as well).
SHELL := /bin/bash

# The version in file names: dpkg leaves the epoch out (1:0.1.0 -> fingerd_0.1.0_all.deb).
DEBPKG_VERSION := $(shell sed -n '1s/^[^(]*(\([0-9]*:\)\{0,1\}\([^)]*\)).*/\2/p' debian/changelog)
DEBPKG_ARCH := $(shell dpkg --print-architecture)
DEBPKG_DIST ?= dist
DEBPKG_DEB := $(DEBPKG_DIST)/fingerd_$(DEBPKG_VERSION)_all.deb
DEBPKG_CHANGES := $(DEBPKG_DIST)/fingerd_$(DEBPKG_VERSION)_$(DEBPKG_ARCH).changes
# Debian's toolchain only: a `python3` earlier on PATH (pyenv here) makes pybuild pick the wrong
# interpreter and fail with "No module named build".
DEBPKG_ENV := env PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
DEBPKG_ROOT := $(filter 0,$(shell id -u))

.PHONY: deb deb-deps lint-deb e2e-deps deb-offline

deb: deb-deps
	$(DEBPKG_ENV) dpkg-buildpackage -us -uc -b --post-clean
	mkdir -p $(DEBPKG_DIST)
	mv ../fingerd_$(DEBPKG_VERSION)_all.deb \
	   ../fingerd_$(DEBPKG_VERSION)_$(DEBPKG_ARCH).buildinfo \
	   ../fingerd_$(DEBPKG_VERSION)_$(DEBPKG_ARCH).changes $(DEBPKG_DIST)/
	@echo "built $(DEBPKG_DEB)"

# Build-Depends from debian/control (apt reads it from the source tree), plus lintian.
deb-deps:
ifeq ($(DEBPKG_ROOT),0)
	$(DEBPKG_ENV) apt-get update -qq
	$(DEBPKG_ENV) apt-get build-dep -y -qq --no-install-recommends ./
	$(DEBPKG_ENV) apt-get install -y -qq --no-install-recommends lintian
else
	@echo "deb-deps: not root, assuming the build dependencies are installed"
endif

lint-deb: $(DEBPKG_DEB)
	$(DEBPKG_ENV) lintian --fail-on error,warning --info $(DEBPKG_DEB) $(DEBPKG_CHANGES)

$(DEBPKG_DEB):
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) deb

# tests/test_systemd_e2e.py debootstraps a root (cached in /var/cache/fingerd-tests) and boots it
# with systemd-nspawn; it fails in CI (CI=true) when these are missing, and skips elsewhere.
e2e-deps:
ifeq ($(DEBPKG_ROOT),0)
	$(DEBPKG_ENV) apt-get update -qq
	$(DEBPKG_ENV) apt-get install -y -qq --no-install-recommends debootstrap systemd-container
else
	@echo "e2e-deps: not root, the end-to-end test will be skipped"
endif

# The package build as a buildd or sbuild runs it, tests on: in a clean copy of the tree (the
# files git lists, tracked or new, as they are now in the working tree, deleted ones left out:
# nothing ignored, no .venv), by an unprivileged user (created if missing), in a network namespace of its own with
# only loopback up, with a bare environment. Its log goes to $(DEBPKG_OFFLINE_LOG); the .deb is
# thrown away (`make deb` builds the one to install). As root only: the namespace, the user.
DEBPKG_BUILD_USER ?= fingerd-build
DEBPKG_OFFLINE_LOG := $(DEBPKG_DIST)/build-offline.log

deb-offline: deb-deps
ifeq ($(DEBPKG_ROOT),0)
	@getent passwd $(DEBPKG_BUILD_USER) >/dev/null || useradd --system --user-group \
		--home-dir /nonexistent --shell /usr/sbin/nologin \
		--comment "fingerd package builds (make deb-offline)" $(DEBPKG_BUILD_USER)
	@mkdir -p $(DEBPKG_DIST)
	@set -euo pipefail; start=$$(date +%s); \
	tmp=$$(mktemp -d /tmp/fingerd-build.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/fingerd"; \
	git ls-files -z --cached --others --exclude-standard \
		| while IFS= read -r -d '' f; do \
			if [ -e "$$f" ] || [ -L "$$f" ]; then printf '%s\0' "$$f"; fi; done \
		| xargs -0 --no-run-if-empty cp -P --parents -t "$$tmp/fingerd"; \
	chown -R $(DEBPKG_BUILD_USER): "$$tmp"; \
	echo "deb-offline: dpkg-buildpackage -us -uc -b in $$tmp/fingerd as $(DEBPKG_BUILD_USER)," \
		"loopback only; log: $(DEBPKG_OFFLINE_LOG)"; \
	if ! unshare --net -- /bin/sh -c 'ip link set lo up && cd "$$1/fingerd" && exec runuser \
			-u $(DEBPKG_BUILD_USER) -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/nonexistent LANG=C.UTF-8 dpkg-buildpackage -us -uc -b' sh "$$tmp" \
			>$(DEBPKG_OFFLINE_LOG) 2>&1 </dev/null; then \
		tail -n 80 $(DEBPKG_OFFLINE_LOG); echo "deb-offline: FAILED (log: $(DEBPKG_OFFLINE_LOG))"; \
		exit 1; \
	fi; \
	grep -E '^=* ?[0-9]+ (passed|failed)' $(DEBPKG_OFFLINE_LOG) || true; \
	echo "deb-offline: built and tested in $$(( $$(date +%s) - start )) s"
else
	@echo "deb-offline: needs root (a network namespace, a build user); not run"
	@[ "$${CI:-}" != true ] || { echo "deb-offline: CI must run it"; exit 1; }
endif
