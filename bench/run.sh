#!/usr/bin/env bash
# make bench / make bench-profile: the side-by-side HTTP benchmark (bench/http_bench.lua)
# against a throwaway redis-server (and Redis Cluster, and Sentinel group) and nginx on
# loopback, then the chart.
#
#   bench/run.sh                  the benchmark; settings from the environment:
#     BENCH_QUICK=1               a smoke run: get and set_meta, 1 and 32 connections, 1 worker, 1 rep
#                                 (the tables of their own at 32 connections)
#     BENCH_OPS=get,set           ops (get,set,set_meta,delete,read_metadata)
#     BENCH_CONC=1,32,128         wrk connections of the single-node rows
#     BENCH_WORKERS=1,2           nginx workers, of all rows (the tables of their own run with those
#                                 of their worker counts it has)
#     BENCH_REPS=3                repetitions (median) BENCH_DURATION=1   seconds per wrk run
#     BENCH_WARMUP=1              seconds of warm-up per op, all implementations at once (0: none)
#     BENCH_IMPLS=up,co,cn,na     implementations: up upstream, co cosocket (pipelining on),
#                                 cn cosocket with pipelining = false (rows with >1 connection), na native
#     UPSTREAM_LUA_PATH           where resty.session.redis and resty.redis are (a LuaRocks
#                                 tree or a Lua path; for the cluster rows also resty.rediscluster,
#                                 resty.lock, resty.string, for the sentinel rows resty.redis.connector:
#                                 up is left out of those rows, and the log says why, without them);
#                                 default ../shared/third_party
#     BENCH_CLUSTER=1|0|only      the Redis Cluster rows (get, set + old_key + 2 metadata and
#                                 read_metadata at 32 and 128 connections, 1 and 2 workers: upstream's
#                                 resty.session.redis.cluster vs ours, cosockets and native) on a
#                                 3+3 cluster (with-servers.sh's `cluster`, made in
#                                 the background while the first rows run): 1 (default)
#                                 with the other rows, 0 none (no cluster started), only: nothing else
#     BENCH_SENTINEL=1|0|only     the Redis Sentinel rows (the same ops, connections and workers:
#                                 upstream's resty.session.redis.sentinel on lua-resty-redis-connector
#                                 vs ours, cosockets and native) on the group of
#                                 spec/support/with-sentinels.sh (master, replica, 3 sentinels; made
#                                 before the benchmark starts, down-after-milliseconds 30 s): 1 (default)
#                                 with the other rows, 0 none (no group started), only: nothing else
#     BENCH_DURABILITY=1|0|only   the durability rows (set and set + 2 metadata at 32 and 128 connections, 32 quick;
#                                 1 worker: co and na, then cw and nw, the same with wait_replicas = 1,
#                                 wait_timeout = 1000) with a replica attached to the single Redis for
#                                 these rows only (bench/replica.lua): 1 (default) with the other rows,
#                                 0 none, only: nothing else (several only: those kinds of rows)
#     BENCH_STATS=1|0|only        the statistics rows (get and set at 32 and 128 connections, 32 quick;
#                                 1 worker): cq and co, nq and na, the same calls with counting off and
#                                 on (stats_enabled): what stats() costs; 1 (default), 0 none, only
#     BENCH_README=0|1            rewrite README.md's section (default: only after a full run)
#   bench/run.sh --profile [IMPL [OP [CONC [SECONDS [WORKERS]]]]]
#                                 perf record -g on the workers under load, top symbols (IMPL
#                                 also a statistics row: stats/cq, stats/co)
#
# Everything runs in a temporary directory; on exit (also Ctrl-C) nginx and the
# redis-servers are stopped and the directory removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in wrk redis-benchmark luajit; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps)" >&2; exit 2; }
done

STATE="$(mktemp -d "${TMPDIR:-/tmp}/rsh-bench.XXXXXX")"
CMD_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$CMD_PID" ]]; then
        kill -TERM "$CMD_PID" 2>/dev/null || true
        wait "$CMD_PID" 2>/dev/null || true
    fi
    # nginx runs daemonised with its prefix under $STATE, the durability rows' replica with
    # its directory there: stop any still running (with-servers.sh stops the other servers)
    local pidfile pid i
    for pidfile in "$STATE"/rsh-nginx.*/logs/nginx.pid "$STATE"/rsh-replica.*/redis.pid; do
        [[ -f "$pidfile" ]] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        [[ -n "$pid" ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$STATE"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export TMPDIR="$STATE"
RESULTS="${BENCH_RESULTS:-bench/results}"
export BENCH_RESULTS="$RESULTS"
mkdir -p "$RESULTS"

if [[ "${1:-}" == "--profile" ]]; then
    shift
    command -v perf >/dev/null || { echo "bench: perf not found (apt-get install linux-perf)" >&2; exit 2; }
    export BENCH_PERF_DATA="${BENCH_PERF_DATA:-$RESULTS/perf.data}"
    spec/support/with-servers.sh --only plain luajit bench/http_bench.lua --profile "$@" &
    CMD_PID=$!
    wait "$CMD_PID"
    exit $?
fi

started=$(date +%s)
CLUSTER_MODE="${BENCH_CLUSTER:-1}" SENTINEL_MODE="${BENCH_SENTINEL:-1}" DURABILITY_MODE="${BENCH_DURABILITY:-1}"
STATS_MODE="${BENCH_STATS:-1}"
any_only=0
for mode in "$CLUSTER_MODE" "$SENTINEL_MODE" "$DURABILITY_MODE" "$STATS_MODE"; do
    [[ "$mode" == only ]] && any_only=1
done
# whether the rows of a mode run: only, or 1 when no other kind of rows is only
rows_run() { [[ "$1" == only || ( "$1" == 1 && $any_only == 0 ) ]]; }
# no cluster, no sentinel group when their rows do not run
servers=plain
rows_run "$CLUSTER_MODE" && servers=plain,cluster
sentinels=()
rows_run "$SENTINEL_MODE" && sentinels=(spec/support/with-sentinels.sh)
# the cluster is made while the single-node rows run (the benchmark waits for it); the
# sentinel group is made first (a few seconds) with a long down-after-milliseconds: a master
# slow to answer a sentinel under load is not failed over in the middle of the rows
export WITH_SERVERS_CLUSTER_BACKGROUND=1 WITH_SENTINELS_DOWN_AFTER_MS=30000
spec/support/with-servers.sh --only "$servers" "${sentinels[@]}" luajit bench/http_bench.lua &
CMD_PID=$!
wait "$CMD_PID"
CMD_PID=""

if [[ $any_only == 1 ]]; then
    echo "bench: cluster, sentinel, durability or statistics rows only: no chart (it shows the single-node rows)" >&2
elif command -v gnuplot >/dev/null; then
    gnuplot -e "datafile='$RESULTS/chart.dat'; outfile='$RESULTS/results.png'" bench/chart.gp
    echo "bench: chart in $RESULTS/results.png" >&2
else
    echo "bench: gnuplot not found (apt-get install gnuplot-nox): no chart" >&2
fi
# README.md shows full default runs only (BENCH_README=1 forces, 0 skips).
full=1
for knob in BENCH_QUICK BENCH_OPS BENCH_CONC BENCH_WORKERS BENCH_REPS BENCH_DURATION BENCH_WARMUP BENCH_IMPLS \
        BENCH_RESULTS; do
    [[ -n "${!knob:-}" && "$knob" != BENCH_RESULTS ]] && full=0
done
[[ "$RESULTS" != bench/results ]] && full=0
[[ "$CLUSTER_MODE" != 1 || "$SENTINEL_MODE" != 1 || "$DURABILITY_MODE" != 1 || "$STATS_MODE" != 1 ]] && full=0
if [[ "${BENCH_README:-$full}" == 1 ]]; then
    luajit bench/update_readme.lua "$RESULTS"
fi
echo "bench: make bench took $(( $(date +%s) - started )) s" >&2
