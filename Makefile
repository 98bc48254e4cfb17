# lua-resty-session-hiredis: install, build, test, demo.
#   make deps    install the Debian packages that are missing
#   make build   configure and build with CMake (module, unit tests)
#   make test    deps + build + ctest + busted specs against throwaway redis-servers
#   make demo    deps + build + a round trip through resty.session.hiredis
#   make asan    unit tests and native specs under ASan/UBSan (build-asan/)
#   make valgrind  the native specs under valgrind
#   make lint    luacheck (when installed)
#   make docs    the API page of resty.session.hiredis (LDoc) into docs/
SHELL := /bin/bash
.DEFAULT_GOAL := test

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
LUAJIT ?= luajit
BUSTED ?= /usr/bin/busted
BUSTED_ARGS ?=
WITH_SERVERS := spec/support/with-servers.sh
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEB_PACKAGES := build-essential cmake pkg-config luajit2 libluajit2-5.1-dev libhiredis-dev \
	libssl-dev lua-busted luarocks redis-server redis-tools redis-sentinel nginx \
	libnginx-mod-http-lua lua-resty-core lua-nginx-redis openssl googletest libgtest-dev \
	libbenchmark-dev valgrind wrk clang lua-socket curl lua-cjson lua-ldoc lua-discount

.PHONY: deps build test unit spec demo asan valgrind bench fuzz rock-check lint docs clean

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "deps: all Debian packages present"; \
	fi

build:
	flock build.lock sh -c 'cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DRSH_BUILD_TESTS=ON && \
		cmake --build $(BUILD_DIR) -j$(JOBS)'

# rock-check, ctest, then the busted specs (its summary is the last line); all
# always run, the target fails when any did.
test: deps build
	@status=0; \
	$(MAKE) --no-print-directory rock-check || status=1; \
	$(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory spec || status=1; \
	exit $$status

# Under the servers too: the TLS unit tests connect to them (they skip otherwise).
unit:
	$(WITH_SERVERS) ctest --test-dir $(BUILD_DIR) --output-on-failure

spec:
	$(WITH_SERVERS) $(LUAJIT) $(BUSTED) $(BUSTED_ARGS)

# Plain LuaJIT (native transport), a Redis Cluster round trip, then the same
# round trip inside nginx.
demo: deps build
	$(WITH_SERVERS) --only plain,cluster examples/run_demo.sh


# The specs that need no nginx (the nginx ones start nginx processes, which must
# not inherit LD_PRELOAD or run under valgrind).
NATIVE_SPECS = $(wildcard spec/*_spec.lua) spec/cluster/native_spec.lua spec/cluster/reshard_spec.lua

# AddressSanitizer + UBSan build of the core (build-asan/): the unit tests, then
# the native specs in luajit with the sanitizer runtimes preloaded.
asan: deps
	flock build.lock sh -c 'cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRSH_BUILD_TESTS=ON -DRSH_SANITIZE=ON && \
		cmake --build build-asan -j$(JOBS)'
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir build-asan --output-on-failure
	$(WITH_SERVERS) env LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(LUAJIT) $(BUSTED) --cpath='build-asan/lib/?.so' $(BUSTED_ARGS) $(NATIVE_SPECS)

# The native specs under valgrind (memcheck) against the normal build.
valgrind: deps build
	$(WITH_SERVERS) valgrind --error-exitcode=1 -q \
		$(LUAJIT) $(BUSTED) $(BUSTED_ARGS) $(NATIVE_SPECS)

# Micro benchmarks (Google Benchmark) and round trips through the native transport.
bench: deps
	flock build.lock sh -c 'cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DRSH_BUILD_BENCH=ON && \
		cmake --build build-bench -j$(JOBS)'
	build-bench/micro_bench
	$(WITH_SERVERS) --only plain env RSH_BUILD_DIR=build-bench $(LUAJIT) bench/native_bench.lua 20000

# libFuzzer on the reply parser and operations (clang); FUZZ_SECONDS to taste.
FUZZ_SECONDS ?= 120
fuzz: deps
	flock build.lock sh -c 'CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRSH_BUILD_FUZZ=ON && \
		cmake --build build-fuzz -j$(JOBS) --target fuzz_reply'
	mkdir -p build-fuzz/corpus
	build-fuzz/fuzz_reply -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus tests/fuzz_corpus

# luarocks builds and installs both modules into a throwaway tree, and LuaJIT loads them from it.
rock-check: deps
	tree=$$(mktemp -d) && trap 'rm -rf "$$tree"' EXIT && \
	luarocks --lua-version 5.1 --tree "$$tree" make lua-resty-session-hiredis-*.rockspec >"$$tree/build.log" 2>&1 || \
		{ tail -30 "$$tree/build.log"; exit 1; }; \
	LUA_PATH="$$tree/share/lua/5.1/?.lua;;" LUA_CPATH="$$tree/lib/lua/5.1/?.so;;" \
		$(LUAJIT) -e 'local h = require "resty.session.hiredis"; print("rock-check: loaded " .. h._VERSION .. " from " .. package.searchpath("resty.session.hiredis.core", package.cpath))'

# The API page of resty.session.hiredis (LDoc, config.ld): docs/index.html and
# docs/ldoc.css, generated (not committed). Any LDoc warning fails the target.
docs: deps
	ldoc --fatalwarnings .

lint:
	@if command -v luacheck >/dev/null 2>&1; then \
		luacheck lua spec examples; \
	else \
		echo "lint: luacheck not installed (apt-get install lua-check), skipping"; \
	fi

clean:
	rm -rf $(BUILD_DIR) build-asan build-bench build-fuzz build.lock docs/index.html docs/ldoc.css
