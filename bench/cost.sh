#!/usr/bin/env bash
# What a storage call costs a worker in user-space instructions, single node against
# Redis Cluster and Sentinel (make bench-cost): the steady figure for "within 1.5x of
# the single-node row", where CPU time per request on a 2-core VM moves by more than
# the gap. One nginx worker runs under callgrind with the three cosocket storages
# (`resty.session.hiredis` on the single Redis, `.cluster` on the 3+3 cluster, with
# `sentinels` on the sentinel group); per path, wrk drives it for a few seconds and the
# instructions per request minus a no-op request's are the storage's.
#   bench/cost.sh [connections] [ops]      (make bench-cost COST="32 get,set_meta,read_metadata")
# Servers: spec/support/with-servers.sh (plain, cluster) and with-sentinels.sh, started here.
# Per path, the callgrind dump stays in the printed directory for callgrind_annotate.
#
# COST_MODE=flights (make bench-flights): where the CPU time goes that instructions do not
# show. The same worker runs without valgrind; per path, COST_REPS interleaved runs of
# COST_SECONDS each, medians of: requests per second, the worker's user and system CPU
# per request (/proc), pipeline flights (one write and its replies on a node's connection)
# per request and calls per flight, sentinel lookups per request (stats()), and with
# COST_STRACE=1 one more run per path under strace -c for the system calls per request
# (traced, the worker runs slower and more calls share a flight or a lookup: counts of
# the socket calls are of that run, not of the timed ones).
# COST_PERF=1 (flights mode): one more run per path under `perf record -g` (cpu-clock, kernel
# included); the reports stay in the printed directory (`perf report -i <path>.perf`).
# nginx logs at its default level, error (COST_LOG_LEVEL to change it: at warn or lower,
# stock nginx's auto-pipelines do not linger, see pipeline.lua).
# COST_LOOKUP=1 adds the paths sentinel_lookup/<op>: the Sentinel storage with
# sentinel_watch = false (a lookup per call, shared by concurrent calls).
# COST_TAGGED=1 adds the paths cluster_tagged/<op>: the cluster storage with a hash-tagged
# prefix, so that a call's keys share one slot (one node, one phase, one MULTI/EXEC):
# what the cluster machinery costs without the fan-out of upstream's key layout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${HIREDIS_TEST_CLUSTER_PORTS:-}" ]]; then
    exec spec/support/with-servers.sh --only plain,cluster spec/support/with-sentinels.sh "$0" "$@"
fi

CONNS=${1:-32}
OPS=${2:-get,set_meta,read_metadata}
MODE=${COST_MODE:-callgrind}
SECONDS_PER_PATH=${COST_SECONDS:-$([[ "$MODE" == flights ]] && echo 4 || echo 8)}
REPS=${COST_REPS:-3}
ROOT=$PWD
BUILD=${RSH_BUILD_DIR:-build}
MODULES=/usr/lib/nginx/modules
[[ -f "$MODULES/ngx_http_lua_module.so" ]] || { echo "cost: needs libnginx-mod-http-lua" >&2; exit 1; }
[[ "$MODE" == flights ]] || command -v callgrind_control >/dev/null || { echo "cost: needs valgrind" >&2; exit 1; }

STATE="$(mktemp -d "${TMPDIR:-/tmp}/rsh-cost.XXXXXX")"
NGINX_PID=""
cleanup() {
    if [[ -n "$NGINX_PID" ]]; then
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

free_port() { luajit -e 'local s = require("socket").bind("127.0.0.1", 0); local _, port = s:getsockname(); print(port); s:close()'; }
HTTP_PORT=$(free_port)
IFS=, read -ra cluster_ports <<< "$HIREDIS_TEST_CLUSTER_PORTS"
IFS=, read -ra sentinel_ports <<< "$HIREDIS_SENTINEL_PORTS"
nodes="{"; for p in "${cluster_ports[@]}"; do nodes+="{ ip = '127.0.0.1', port = $p },"; done; nodes+="}"
sentinels="{"; for p in "${sentinel_ports[@]}"; do sentinels+="{ host = '127.0.0.1', port = $p },"; done; sentinels+="}"

cat > "$STATE/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $STATE/error.log ${COST_LOG_LEVEL:-error};
pid $STATE/nginx.pid;
load_module $MODULES/ndk_http_module.so;
load_module $MODULES/ngx_http_lua_module.so;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path $STATE; proxy_temp_path $STATE; fastcgi_temp_path $STATE; uwsgi_temp_path $STATE; scgi_temp_path $STATE;
  lua_package_path "$ROOT/lua/?.lua;;";
  lua_package_cpath "$ROOT/$BUILD/lib/?.so;;";
  init_by_lua_block {
    local hiredis = require "resty.session.hiredis"
    N, I = 0, 0  -- requests served, the key counter
    VALUE = string.rep("v", 512)
    STORAGES = {
      single = hiredis.new({ host = "127.0.0.1", port = $HIREDIS_TEST_PORT }),
      cluster = require("resty.session.hiredis.cluster").new({ nodes = $nodes,
                                                               password = "$HIREDIS_TEST_CLUSTER_PASSWORD" }),
      sentinel = hiredis.new({ sentinels = $sentinels, master = "mymaster",
                               sentinel_password = "$HIREDIS_SENTINEL_PASSWORD",
                               password = "$HIREDIS_SENTINEL_MASTER_PASSWORD" }),
      -- COST_LOOKUP=1: the same with a lookup per call (no sentinel_watch)
      sentinel_lookup = hiredis.new({ sentinels = $sentinels, master = "mymaster",
                                      sentinel_password = "$HIREDIS_SENTINEL_PASSWORD",
                                      password = "$HIREDIS_SENTINEL_MASTER_PASSWORD", sentinel_watch = false }),
      -- COST_TAGGED=1: every key of a call in one slot
      cluster_tagged = require("resty.session.hiredis.cluster").new({ nodes = $nodes, prefix = "{t}",
                                                                      password = "$HIREDIS_TEST_CLUSTER_PASSWORD" }),
      noop = {},
    }
    -- make bench's keys: 200 sessions, 50 subjects, set_meta = set + old_key + 2 metadata
    local function meta(i) return { audiences = { "web", "api" }, subjects = { "u" .. i % 50, "u" .. i % 50 } } end
    OPS = {
      get = function(s, i) return s:get("session", "k" .. i % 200) end,
      set_meta = function(s, i)
        return s:set("session", "m" .. i % 200, VALUE, 600, ngx.time(), "m" .. (i - 1) % 200, 10, meta(i))
      end,
      read_metadata = function(s, i) return s:read_metadata("session", "web", "u" .. i % 50, ngx.time()) end,
      noop = function() return true end,  -- the same request's work, no storage call
      fill = function(s, i)
        assert(s:set("session", "k" .. i, VALUE, 600, ngx.time()))
        return s:set("session", "m" .. i, VALUE, 600, ngx.time(), nil, nil, meta(i))
      end,
    }
  }
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location ~ ^/(single|cluster|cluster_tagged|sentinel|sentinel_lookup|noop)/(\w+)$ {
      content_by_lua_block {
        I = I + 1
        local ok, err = OPS[ngx.var[2]](STORAGES[ngx.var[1]], I)
        N = N + 1
        if not ok then
          ngx.status = 500
          ngx.print(tostring(err))
          return
        end
        ngx.print("ok")
      }
    }
    location = /fill {
      content_by_lua_block {
        for _, kind in ipairs({ "single", "cluster", "cluster_tagged", "sentinel" }) do
          for i = 0, 199 do assert(OPS.fill(STORAGES[kind], i)) end
        end
        ngx.print("ok")
      }
    }
    location = /count { content_by_lua_block { ngx.print(N) } }
    location = /counters {
      content_by_lua_block {  -- requests, pipeline flights and their calls, sentinel lookups
        local s = require("resty.session.hiredis").stats()
        ngx.print(N, " ", s.pipeline.batches, " ", s.pipeline.calls, " ", s.sentinel.lookups)
      }
    }
  }
}
CONF

requests() { curl -s "http://127.0.0.1:$HTTP_PORT/count"; }
if [[ "$MODE" == flights ]]; then
    nginx -p "$STATE" -c "$STATE/nginx.conf" &
else
    valgrind --tool=callgrind --callgrind-out-file="$STATE/cg.out" --smc-check=all-non-file \
        nginx -p "$STATE" -c "$STATE/nginx.conf" 2>"$STATE/valgrind.log" &
fi
NGINX_PID=$!
until [[ -n "$(requests 2>/dev/null)" ]]; do
    kill -0 "$NGINX_PID" 2>/dev/null || { echo "cost: nginx did not start: $(cat "$STATE"/*.log 2>/dev/null)" >&2; exit 1; }
    sleep 0.5
done
[[ "$(curl -s "http://127.0.0.1:$HTTP_PORT/fill")" == ok ]] || { echo "cost: could not write the sessions" >&2; exit 1; }

paths=()
IFS=, read -ra ops <<< "$OPS"
for op in "${ops[@]}"; do
    paths+=("single/$op" "cluster/$op" "sentinel/$op")
    [[ "${COST_LOOKUP:-0}" == 1 ]] && paths+=("sentinel_lookup/$op")
    [[ "${COST_TAGGED:-0}" == 1 ]] && paths+=("cluster_tagged/$op")
done

# Instructions per request of a path under wrk, from a callgrind dump; a failed request fails.
measure() { # $1: path
    local before after dump name=${1//\//_}
    before=$(requests)
    callgrind_control -z "$NGINX_PID" >/dev/null 2>&1
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PATH}s" "http://127.0.0.1:$HTTP_PORT/$1" > "$STATE/wrk.$name"
    callgrind_control -d "$NGINX_PID" >/dev/null 2>&1
    after=$(requests)
    failed_requests "$1" "$STATE/wrk.$name"
    dump=$(ls -t "$STATE"/cg.out.* | head -1)
    mv "$dump" "$STATE/callgrind.$name"
    echo $(( $(awk '/^(summary|totals):/ { print $2; exit }' "$STATE/callgrind.$name") / (after - before) ))
}

failed_requests() { # $1: path, $2: wrk output file
    if grep -q "Non-2xx" "$2"; then
        echo "cost: $1 answered errors: $(grep -m1 -v '^\s*$' "$STATE/error.log" || true)" >&2
        exit 1
    fi
}

# One run of a path at full speed -> "rps user_us sys_us flights calls_per_flight lookups"
# (per request; the worker's CPU from /proc/PID/stat, in clock ticks).
flights_run() { # $1: path
    local u0 s0 u1 s1 n0 b0 c0 l0 n1 b1 c1 l1 name=${1//\//_}
    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$NGINX_PID/stat")
    read -r n0 b0 c0 l0 <<< "$(curl -s "http://127.0.0.1:$HTTP_PORT/counters")"
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PATH}s" "http://127.0.0.1:$HTTP_PORT/$1" > "$STATE/wrk.$name"
    read -r n1 b1 c1 l1 <<< "$(curl -s "http://127.0.0.1:$HTTP_PORT/counters")"
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$NGINX_PID/stat")
    failed_requests "$1" "$STATE/wrk.$name"
    awk -v n=$((n1 - n0)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v b=$((b1 - b0)) -v c=$((c1 - c0)) \
        -v l=$((l1 - l0)) -v hz="$(getconf CLK_TCK)" -v t="$SECONDS_PER_PATH" 'BEGIN {
        printf "%d %.2f %.2f %.3f %.2f %.3f\n", n / t, u * 1e6 / hz / n, s * 1e6 / hz / n, b / n,
            (b > 0 ? c / b : 0), l / n }'
}

# The system calls per request of a path, under strace -c (slower: counts, not times).
syscalls_run() { # $1: path
    local n0 n1 tracer
    n0=$(requests)
    strace -c -f -p "$NGINX_PID" -o "$STATE/strace" 2>/dev/null &
    tracer=$!
    sleep 0.5
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PATH}s" "http://127.0.0.1:$HTTP_PORT/$1" >/dev/null
    kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
    n1=$(requests)
    awk -v n=$((n1 - n0)) '$NF ~ /^[a-z_0-9]+$/ && $NF != "total" && NF >= 5 && $4 ~ /^[0-9]+$/ {
        printf "%s %.3f  ", $NF, $4 / n }' "$STATE/strace" | tr -s ' ' | sed 's/  $//'
    echo
}

# One run of a path under perf record (cpu-clock samples of the worker, kernel included).
perf_run() { # $1: path
    local name=${1//\//_}
    perf record -q -e cpu-clock -F 4999 -g -p "$NGINX_PID" -o "$STATE/$name.perf" \
        -- sleep "$SECONDS_PER_PATH" >/dev/null 2>&1 &
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PATH}s" "http://127.0.0.1:$HTTP_PORT/$1" >/dev/null
    wait $!
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [[ "$MODE" == flights ]]; then
    echo "cost: flights, $CONNS connections, $REPS interleaved runs of ${SECONDS_PER_PATH} s per path (medians)"
    all=(noop/noop "${paths[@]}")
    for path in "${all[@]}"; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$HTTP_PORT/$path" >/dev/null; done
    declare -A runs
    for ((rep = 1; rep <= REPS; rep++)); do
        for path in "${all[@]}"; do runs[$path]+="$(flights_run "$path")"$'\n'; done
    done
    printf "%-24s %8s %9s %9s %11s %12s %11s\n" path rps "user us" "sys us" flights/req calls/flight lookups/req
    for path in "${all[@]}"; do
        row=()
        for col in 1 2 3 4 5 6; do row+=("$(printf "%s" "${runs[$path]}" | awk -v c=$col 'NF { print $c }' | median)"); done
        printf "%-24s %8s %9s %9s %11s %12s %11s\n" "$path" "${row[@]}"
        if [[ -n "${COST_STRACE:-}" ]]; then
            command -v strace >/dev/null || { echo "cost: COST_STRACE needs strace" >&2; exit 1; }
            echo "    syscalls/req: $(syscalls_run "$path")"
        fi
        if [[ -n "${COST_PERF:-}" ]]; then
            command -v perf >/dev/null || { echo "cost: COST_PERF needs perf (linux-perf)" >&2; exit 1; }
            perf_run "$path"
        fi
    done
    echo "cost: per request; user and system CPU of the one worker, not less the no-op row's"
    [[ -z "${COST_PERF:-}" ]] || echo "cost: perf profiles in $STATE (perf report -i $STATE/<path>.perf)"
    exit 0
fi

echo "cost: callgrind, $CONNS connections, ${SECONDS_PER_PATH} s per path; warming up (traces)"
wrk -t1 -c"$CONNS" -d4s "http://127.0.0.1:$HTTP_PORT/noop/noop" >/dev/null
for path in "${paths[@]}"; do wrk -t1 -c"$CONNS" -d6s "http://127.0.0.1:$HTTP_PORT/$path" >/dev/null; done
noop=$(measure noop/noop)
declare -A storage
for path in "${paths[@]}"; do
    storage[$path]=$(( $(measure "$path") - noop ))
done
printf "%-14s %12s %12s %12s %10s %10s\n" op single cluster sentinel cluster/1 sentinel/1
for op in "${ops[@]}"; do
    s=${storage[single/$op]} c=${storage[cluster/$op]} t=${storage[sentinel/$op]}
    awk -v op="$op" -v s="$s" -v c="$c" -v t="$t" \
        'BEGIN { printf "%-14s %12d %12d %12d %9.2fx %9.2fx\n", op, s, c, t, c / s, t / s }'
done
# The paths of an optional storage ($1) against the single node's.
against_single() {
    for op in "${ops[@]}"; do
        awk -v op="$op" -v kind="$1" -v s="${storage[single/$op]}" -v o="${storage[$1/$op]}" \
            'BEGIN { printf "%-14s %-15s %12d %9.2fx single\n", op, kind, o, o / s }'
    done
}
[[ "${COST_LOOKUP:-0}" != 1 ]] || against_single sentinel_lookup
[[ "${COST_TAGGED:-0}" != 1 ]] || against_single cluster_tagged
echo "cost: storage instructions per request (minus a no-op request's, $noop); dumps in $STATE"
