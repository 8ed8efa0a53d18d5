# weft — a thin wrapper over CMake.  `make help` lists the targets.
#
#   make demo        install what is missing, build, run the demo (the
#                    Python tour: examples/python/tour.sh, docs/python.md)
#   make test        build, run the test suite
#
# Every CMake build directory is a variable, so several can live side by side
# (build/, build-release/, build-asan/, build-tsan/).  Extra configure flags
# go in CMAKE_FLAGS, e.g.  make build CMAKE_FLAGS=-DWEFT_ALLOCATOR=libc
# SKIP_DEPS=1 skips the package check (other distributions, offline machines).

SHELL := /bin/bash
.DEFAULT_GOAL := build

BUILD_DIR   ?= build
RELEASE_DIR ?= build-release
ASAN_DIR    ?= build-asan
TSAN_DIR    ?= build-tsan
PREFIX      ?= /usr/local
DEMO        ?= examples/python/tour.sh $(BUILD_DIR)
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE       ?= cmake
CTEST       ?= ctest
CMAKE_FLAGS ?=
SKIP_DEPS   ?=
SEEDS       ?= 1 2 3 4 5
PCT_SEEDS   ?= 6:2 7:3

# Debian packages: what every build needs, and what `make bench` adds.
DEPS       := build-essential cmake pkg-config liburing-dev libjemalloc-dev \
              libcmocka-dev clang
BENCH_DEPS := golang-go

# Compilers: gcc for the normal and ASan builds, clang for TSan.  Recursive
# (=) so that they are looked up after `deps` has installed them.
ASAN_CC = gcc
TSAN_CC = $(shell command -v clang || command -v clang-14 || echo clang)
# clang 14's TSan dies ("unexpected memory mapping") when the kernel
# randomizes mmap with more than 28 bits; its tests run without ASLR
# (setarch -R) where that is allowed.
TSAN_RUN ?= $(shell setarch $$(uname -m) -R true 2>/dev/null && echo setarch $$(uname -m) -R)

# Sanitizer run-time settings; the environment overrides them.
ASAN_OPTIONS  ?= detect_leaks=1
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
TSAN_OPTIONS  ?= halt_on_error=1 second_deadlock_stack=1
ASAN_TEST_SCALE ?= 0.2
TSAN_TEST_SCALE ?= 0.05

CTEST_RUN = $(CTEST) --test-dir $(1) --output-on-failure -j$(JOBS)

.PHONY: help deps deps-bench build demo test test-seeds bench asan tsan install clean

help:
	@echo 'weft make targets:'
	@echo '  deps      install the Debian packages that are missing (apt-get)'
	@echo '  deps-bench  deps, and what bench adds (Go)'
	@echo '  build     deps, then configure and build $(BUILD_DIR)/ (-DWEFT_WERROR=ON)'
	@echo '  demo      build, then run $(DEMO)'
	@echo '  test      build, then run the tests (ctest)'
	@echo '  test-seeds  build, then the tests under WEFT_SEED=each of SEEDS (now $(SEEDS)),'
	@echo '            and under PCT for each SEED:DEPTH of PCT_SEEDS (now $(PCT_SEEDS))'
	@echo '  bench     Release build in $(RELEASE_DIR)/, then benches/run.sh (installs Go)'
	@echo '  asan      ASan+UBSan build (gcc) in $(ASAN_DIR)/, run the tests (also seeded)'
	@echo '  tsan      TSan build (clang) in $(TSAN_DIR)/, run the tests (also seeded)'
	@echo '  install   build, then install into PREFIX (now $(PREFIX))'
	@echo '  clean     remove the build directories (and the logs of .ci/run)'
	@echo 'variables: BUILD_DIR RELEASE_DIR ASAN_DIR TSAN_DIR PREFIX DEMO JOBS SEEDS'
	@echo '           PCT_SEEDS CMAKE_FLAGS SKIP_DEPS=1'

# install_missing PACKAGES: apt-get install the packages dpkg does not list as
# installed; apt-get update runs once, and only if something is missing.
define install_missing
	@set -eu; \
	if [ -n "$(SKIP_DEPS)" ]; then echo "deps: skipped (SKIP_DEPS)"; exit 0; fi; \
	if ! command -v dpkg >/dev/null 2>&1; then \
		echo "deps: no dpkg here, not a Debian system; install these (or your" \
		     "distribution's equivalents) yourself: $(1)" >&2; \
		exit 0; \
	fi; \
	missing=; \
	for p in $(1); do \
		dpkg -s "$$p" 2>/dev/null | grep -q '^Status: install ok installed' || \
			missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all present"; exit 0; fi; \
	echo "deps: installing:$$missing"; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	else \
		echo "deps: not root and no sudo; as root, run:" >&2; \
		echo "  apt-get update && apt-get install -y --no-install-recommends$$missing" >&2; \
		exit 1; \
	fi; \
	apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3"; \
	$$apt update; \
	$$apt install -y --no-install-recommends $$missing
endef

deps:
	$(call install_missing,$(DEPS))

deps-bench:
	$(call install_missing,$(DEPS) $(BENCH_DEPS))

build: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DWEFT_WERROR=ON $(CMAKE_FLAGS)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)

demo: build
	$(DEMO)

test: build
	$(call CTEST_RUN,$(BUILD_DIR))

# The whole suite again, each weft_run simulated under a fixed seed
# (weft/sim.h, docs/testing.md); tests about real threads skip themselves.
test-seeds: build
	@set -e; for s in $(SEEDS); do \
		echo "== WEFT_SEED=$$s"; \
		WEFT_SEED=$$s $(call CTEST_RUN,$(BUILD_DIR)); \
	done; \
	for sd in $(PCT_SEEDS); do \
		echo "== WEFT_SEED=$${sd%%:*} WEFT_PCT=$${sd##*:}"; \
		WEFT_SEED=$${sd%%:*} WEFT_PCT=$${sd##*:} \
			$(call CTEST_RUN,$(BUILD_DIR)); \
	done

bench: deps-bench
	$(CMAKE) -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release \
		-DWEFT_BUILD_TESTS=OFF $(CMAKE_FLAGS)
	$(CMAKE) --build $(RELEASE_DIR) -j$(JOBS)
	benches/run.sh $(RELEASE_DIR)

# ASan at -O0 (Debug): more frames keep poisoned redzones there, which is
# how stale shadow left by a fiber's last frames showed (stack.c); UBSan
# checks at either level.
asan: deps
	$(CMAKE) -S . -B $(ASAN_DIR) -DCMAKE_C_COMPILER=$(ASAN_CC) \
		-DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_ASM_COMPILER=$(ASAN_CC) -DWEFT_SANITIZE=address \
		-DWEFT_WERROR=ON -DWEFT_BUILD_BENCHES=OFF $(CMAKE_FLAGS)
	$(CMAKE) --build $(ASAN_DIR) -j$(JOBS)
	ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
	WEFT_TEST_SCALE=$(ASAN_TEST_SCALE) $(call CTEST_RUN,$(ASAN_DIR))
	@echo "== the suite again, seeded (WEFT_SEED=1): the simulator under ASan"
	ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
	WEFT_SEED=1 WEFT_TEST_SCALE=$(ASAN_TEST_SCALE) $(call CTEST_RUN,$(ASAN_DIR))

tsan: deps
	$(CMAKE) -S . -B $(TSAN_DIR) -DCMAKE_C_COMPILER=$(TSAN_CC) \
		-DCMAKE_ASM_COMPILER=$(TSAN_CC) -DWEFT_SANITIZE=thread \
		-DWEFT_WERROR=ON -DWEFT_BUILD_BENCHES=OFF $(CMAKE_FLAGS)
	$(CMAKE) --build $(TSAN_DIR) -j$(JOBS)
	TSAN_OPTIONS='$(TSAN_OPTIONS)' \
	WEFT_TEST_SCALE=$(TSAN_TEST_SCALE) $(TSAN_RUN) $(call CTEST_RUN,$(TSAN_DIR))
	@echo "== the suite again, seeded (WEFT_SEED=1): the simulator's inbox and pool hand-offs under TSan"
	TSAN_OPTIONS='$(TSAN_OPTIONS)' WEFT_SEED=1 \
	WEFT_TEST_SCALE=$(TSAN_TEST_SCALE) $(TSAN_RUN) $(call CTEST_RUN,$(TSAN_DIR))

# The install prefix is also set at configure time, so weft.pc names it.
install: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DWEFT_WERROR=ON \
		-DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)
	$(CMAKE) --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR) $(RELEASE_DIR) $(ASAN_DIR) $(TSAN_DIR) build-ci-logs
