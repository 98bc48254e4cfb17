# lua-resty-session-hiredis: install, build, test, demo.
#   make deps    install the Debian packages that are missing
#   make build   configure and build with CMake (module, unit tests)
#   make test    deps + build + ctest + busted specs against throwaway redis-servers
#   make demo    deps + build + a round trip through resty.session.hiredis
#   make asan    unit tests and native specs under ASan/UBSan (build-asan/)
#   make valgrind  the native specs under valgrind
#   make leak-lua51  PUC Lua 5.1 under valgrind: erroring and out-of-memory calls leak nothing
#   make hiredis1  unit tests and native specs against hiredis 1.x (Debian 13's, private prefix)
#   make servers the specs that depend on the server against Redis 6.0, Redis 8.0 and Valkey 8.1
#                (Debian 11's and 13's packages, private prefixes; see below)
#   make stress  the failover, sentinel and cluster specs STRESS_RUNS times (10), fresh servers
#                each run; passed runs per spec file at the end (not part of make test)
#   make bench   upstream resty.session.redis vs this module in nginx under wrk (bench/run.sh)
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
WITH_SENTINELS := spec/support/with-sentinels.sh
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEB_PACKAGES := build-essential cmake pkg-config luajit2 libluajit2-5.1-dev libhiredis-dev \
	libssl-dev lua-busted luarocks redis-server redis-tools redis-sentinel nginx \
	libnginx-mod-http-lua lua-resty-core lua-nginx-redis openssl googletest libgtest-dev \
	libbenchmark-dev valgrind wrk clang lua-socket curl lua-cjson lua-ldoc lua-discount lua5.1 \
	liblua5.1-0-dev

.PHONY: deps build test unit spec stress hiredis1 servers leak-lua51 demo asan valgrind bench bench-deps bench-profile \
	bench-profile-deps bench-readme bench-micro bench-stats-cost bench-cost bench-flights fuzz rock-check lint docs clean

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

# rock-check, the hiredis 1.x run, ctest, then the busted specs (its summary is the
# last line); all always run, the target fails when any did.
test: deps build
	@status=0; \
	$(MAKE) --no-print-directory rock-check || status=1; \
	$(MAKE) --no-print-directory hiredis1 || status=1; \
	$(MAKE) --no-print-directory leak-lua51 || status=1; \
	$(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory spec || status=1; \
	exit $$status

# Under the servers too: the TLS unit tests connect to them (they skip otherwise).
unit:
	$(WITH_SERVERS) ctest --test-dir $(BUILD_DIR) --output-on-failure

spec:
	$(WITH_SERVERS) $(WITH_SENTINELS) $(LUAJIT) $(BUSTED) $(BUSTED_ARGS)

# The spec files that failovers and topology changes can make flaky, STRESS_RUNS
# times, each file of each run under fresh servers (spec/support/stress.sh); the
# count of passed runs per file at the end, failed runs' output in build/stress/.
STRESS_RUNS ?= 10
# (a+b: both in one busted under the same servers, in make spec's order)
STRESS_SPECS ?= spec/cluster/failover_spec.lua spec/sentinel/failover_spec.lua spec/sentinel_spec.lua \
	spec/nginx/sentinel_spec.lua spec/nginx/sentinel_watch_spec.lua spec/cluster/native_spec.lua spec/cluster/nginx_spec.lua \
	spec/cluster/reshard_spec.lua spec/cluster/tls_spec.lua spec/cluster/nginx_tls_spec.lua \
	spec/nginx/sentinel_spec.lua+spec/sentinel/failover_spec.lua+spec/sentinel_spec.lua
stress: deps build
	LUAJIT=$(LUAJIT) BUSTED=$(BUSTED) STRESS_LOG_DIR=$(BUILD_DIR)/stress spec/support/stress.sh $(STRESS_RUNS) $(STRESS_SPECS)

# hiredis 1.x: Debian 13's libhiredis-dev and its library package, fetched with apt's own
# tools into a private apt state and unpacked into build-hiredis1/deps/root (.ci/fetch-deb.sh:
# nothing on the system changes), then the unit tests and the native specs against that build.
HIREDIS1_BUILD ?= build-hiredis1
hiredis1: deps
	prefix="$$(.ci/fetch-deb.sh --deps '^libhiredis[0-9]' $(HIREDIS1_BUILD)/deps bookworm trixie libhiredis-dev)/usr" && \
	flock build.lock sh -c 'cmake -S . -B $(HIREDIS1_BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DRSH_BUILD_TESTS=ON \
			-DHIREDIS_INCDIR="$$0/include" -DHIREDIS_LIBDIR="$$0/lib/$$(gcc -print-multiarch)" >/dev/null && \
		cmake --build $(HIREDIS1_BUILD) -j$(JOBS) --target core unit_tests alloc_tests' "$$prefix"
	@ldd $(HIREDIS1_BUILD)/lib/resty/session/hiredis/core.so | grep -q "$(CURDIR)/$(HIREDIS1_BUILD)/deps/root/.*libhiredis.so.1" || \
		{ echo "hiredis1: core.so does not load the private hiredis 1.x"; ldd $(HIREDIS1_BUILD)/lib/resty/session/hiredis/core.so; exit 1; }
	$(WITH_SERVERS) sh -c 'ctest --test-dir $(HIREDIS1_BUILD) --output-on-failure && \
		$(LUAJIT) $(BUSTED) --cpath="$(HIREDIS1_BUILD)/lib/?.so" $(BUSTED_ARGS) $(NATIVE_SPECS)'

# The server matrix (.ci/servers.sh): SERVERS_SPECS against each of SERVERS, each in one
# busted under with-servers.sh and with-sentinels.sh as make spec runs them, with the
# server's `redis-server` first on PATH; one line per server at the end (version from
# INFO server, busted's counts, seconds) and every failed test with its first message line;
# fails when any server failed. The servers, fetched by .ci/fetch-deb.sh into
# build-servers/<release>/root (a private apt state whose source is the system's Debian 12
# entry renamed; unpacked, never installed) and run through a generated wrapper
# build-servers/bin/<server>/redis-server:
#   redis6   Redis 6.0.16   Debian 11 redis-server + libssl1.1, lua-bitop, lua-cjson, liblua5.1-0,
#                           liblzf1, libjemalloc2, on the system's glibc (LD_LIBRARY_PATH)
#   redis8   Redis 8.0.x    Debian 13 redis-server } glibc 2.38+: through Debian 13's own loader
#   valkey8  Valkey 8.1.x   Debian 13 valkey-server} and libraries (libc6, libssl3t64, ...)
#   redis7   Redis 7.0      the system's, Debian 12 (not in the default SERVERS: make test
#                           already runs every one of these specs against it, same harness)
# redis-cli stays the system's 7.0 for the helper scripts; with-servers.sh and
# with-sentinels.sh write the directives 6.0 lacks its way (spec/support/server-release.sh).
# Trimmed for CI time (.ci/run: make test, about 8 minutes, then make servers; the whole
# run must stay under 30 minutes on 2 cores): make servers takes about 8 minutes with the
# default SERVERS (2.5 per server, of which about 65 s the sentinel failover spec and 15 s
# the servers' start; the first run fetches for about 30 s more). Left out: redis7 (above);
# the nginx specs but the sentinel ones (spec/nginx/*: they exercise nginx and the cosocket
# driver against the plain server, whose commands the native specs already send to each
# release). The failover specs run on SERVERS_FAILOVER (all by default; empty: none).
SERVERS ?= redis6 redis8 valkey8
SERVERS_FAILOVER ?= $(SERVERS)
SERVERS_BUILD ?= build-servers
SERVERS_SPECS = $(NATIVE_SPECS) $(filter-out $(NATIVE_SPECS),$(wildcard spec/cluster/*_spec.lua)) spec/nginx/sentinel_spec.lua \
	spec/nginx/sentinel_tls_spec.lua spec/nginx/sentinel_watch_spec.lua spec/sentinel/failover_spec.lua
servers: deps build
	LUAJIT=$(LUAJIT) BUSTED=$(BUSTED) SERVERS_DIR=$(SERVERS_BUILD) \
		.ci/servers.sh --failover "$(SERVERS_FAILOVER)" $(SERVERS) -- $(SERVERS_SPECS)

# PUC Lua 5.1 raises errors with longjmp, which runs no C++ destructors: erroring
# calls, and calls whose allocations fail in turn, under valgrind must leave nothing
# definitely lost (spec/valgrind/leak-lua51.sh).
leak-lua51: deps build
	$(WITH_SERVERS) --only plain spec/valgrind/leak-lua51.sh $(BUILD_DIR)

# Plain LuaJIT (native transport), a Redis Cluster round trip, then the same
# round trip inside nginx.
demo: deps build
	$(WITH_SERVERS) --only plain,cluster examples/run_demo.sh


# The specs that need no nginx (the nginx ones start nginx processes, which must
# not inherit LD_PRELOAD or run under valgrind).
NATIVE_SPECS = $(wildcard spec/*_spec.lua) spec/cluster/native_spec.lua spec/cluster/reshard_spec.lua spec/cluster/tls_spec.lua

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

# The side-by-side benchmark (bench/run.sh: knobs BENCH_QUICK=1, BENCH_OPS=, BENCH_CONC=,
# BENCH_WORKERS=, BENCH_REPS=, BENCH_DURATION=, BENCH_IMPLS=, BENCH_CLUSTER=1|0|only,
# BENCH_SENTINEL=1|0|only, BENCH_DURABILITY=1|0|only, BENCH_STATS=1|0|only; UPSTREAM_LUA_PATH):
# upstream resty.session.redis vs this module in nginx under wrk, the Redis Cluster rows and the
# Redis Sentinel rows (upstream's cluster / sentinel storage vs this module's, the sentinel group
# of spec/support/with-sentinels.sh), the durability rows (wait_replicas = 1 against none, a
# throwaway replica attached for them only), plus the limits; results in bench/results/ (a full
# run also rewrites README.md's benchmark section).
BENCH_PACKAGES := gnuplot-nox
bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(BENCH_PACKAGES)"

bench: bench-deps build
	bench/run.sh

# perf record -g on the nginx workers under load: PROFILE="IMPL OP CONC SECONDS WORKERS"
# (IMPL up|co|na|noop; OP get|set|set_meta|delete|read_metadata).
PROFILE ?= co get 32 10 1
bench-profile-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) linux-perf"

bench-profile: bench-profile-deps build
	bench/run.sh --profile $(PROFILE)

# What counting (stats()) costs a cosocket get, in user-space instructions (callgrind on
# a real nginx worker, counting on against off): STATS_COST="CONNECTIONS RUNS".
STATS_COST ?= 32 3
bench-stats-cost: deps build
	bench/stats_cost.sh $(STATS_COST)

# What a call costs single node, cluster and sentinel, in user-space instructions per
# request (callgrind on a real nginx worker, cosockets): COST="CONNECTIONS OPS".
COST ?= 32 get,set_meta,read_metadata
bench-cost: deps build
	bench/cost.sh $(COST)

# Where CPU time goes that instructions do not show: the same worker and paths without
# valgrind, per request: rps, user and system CPU, pipeline flights, calls per flight,
# sentinel lookups (medians of COST_REPS interleaved runs); COST_STRACE=1 adds system calls,
# COST_PERF=1 a perf profile per path (kernel included).
bench-flights: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) strace linux-perf"
	COST_MODE=flights bench/cost.sh $(COST)

# The latest bench/results/results.md and chart into README.md.
bench-readme:
	$(LUAJIT) bench/update_readme.lua

# Micro benchmarks (Google Benchmark) and round trips through the native transport.
bench-micro: deps
	flock build.lock sh -c 'cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DRSH_BUILD_BENCH=ON && \
		cmake --build build-bench -j$(JOBS)'
	build-bench/micro_bench
	$(WITH_SERVERS) --only plain env RSH_BUILD_DIR=build-bench $(LUAJIT) bench/native_bench.lua 20000
	RSH_BUILD_DIR=build-bench $(LUAJIT) bench/stats_bench.lua
	RSH_BUILD_DIR=build-bench $(LUAJIT) -joff bench/stats_bench.lua 500000

# libFuzzer (clang, ASan + UBSan) on the reply parser (fuzz_reply) and on the command
# builder / Operation state machine (fuzz_operation), FUZZ_SECONDS each. Inputs up to
# 1 KiB and small reader limits keep each run fast and its memory bounded (a crash
# is reported past 512 MiB of RSS or one 512 MiB allocation). malloc_context_size=0
# saves a stack unwind per allocation; rerun a crash input without it for the report.
FUZZ_SECONDS ?= 120
FUZZ_FLAGS = -max_len=1024 -rss_limit_mb=512 -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix=build-fuzz/
FUZZ_ENV = ASAN_OPTIONS=quarantine_size_mb=16:malloc_context_size=0
fuzz: deps
	flock build.lock sh -c 'CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRSH_BUILD_FUZZ=ON && \
		cmake --build build-fuzz -j$(JOBS) --target fuzz_reply fuzz_operation'
	mkdir -p build-fuzz/corpus-reply build-fuzz/corpus-operation
	$(FUZZ_ENV) build-fuzz/fuzz_reply -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) build-fuzz/corpus-reply tests/fuzz_corpus
	$(FUZZ_ENV) build-fuzz/fuzz_operation -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) build-fuzz/corpus-operation

# A src rock packed from the working tree, installed from outside the repository into a
# fresh tree, both modules loaded from it alone, exported symbols checked (.ci/rock-check.sh).
rock-check: deps
	LUAJIT=$(LUAJIT) .ci/rock-check.sh

# The API page of resty.session.hiredis (LDoc, config.ld): docs/index.html and
# docs/ldoc.css, generated (not committed). Any LDoc warning fails the target.
docs: deps
	ldoc --fatalwarnings .

lint:
	@if command -v luacheck >/dev/null 2>&1; then \
		luacheck lua spec examples bench; \
	else \
		echo "lint: luacheck not installed (apt-get install lua-check), skipping"; \
	fi

clean:
	rm -rf $(BUILD_DIR) build-asan build-bench build-fuzz $(HIREDIS1_BUILD) $(SERVERS_BUILD) build.lock docs/index.html docs/ldoc.css
