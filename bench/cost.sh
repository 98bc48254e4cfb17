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
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${HIREDIS_TEST_CLUSTER_PORTS:-}" ]]; then
    exec spec/support/with-servers.sh --only plain,cluster spec/support/with-sentinels.sh "$0" "$@"
fi

CONNS=${1:-32}
OPS=${2:-get,set_meta,read_metadata}
SECONDS_PER_PATH=${COST_SECONDS:-8}
ROOT=$PWD
BUILD=${RSH_BUILD_DIR:-build}
MODULES=/usr/lib/nginx/modules
[[ -f "$MODULES/ngx_http_lua_module.so" ]] || { echo "cost: needs libnginx-mod-http-lua" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "cost: needs valgrind" >&2; exit 1; }

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
error_log $STATE/error.log warn;
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
    location ~ ^/(single|cluster|sentinel|noop)/(\w+)$ {
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
        for _, kind in ipairs({ "single", "cluster", "sentinel" }) do
          for i = 0, 199 do assert(OPS.fill(STORAGES[kind], i)) end
        end
        ngx.print("ok")
      }
    }
    location = /count { content_by_lua_block { ngx.print(N) } }
  }
}
CONF

requests() { curl -s "http://127.0.0.1:$HTTP_PORT/count"; }
valgrind --tool=callgrind --callgrind-out-file="$STATE/cg.out" --smc-check=all-non-file \
    nginx -p "$STATE" -c "$STATE/nginx.conf" 2>"$STATE/valgrind.log" &
NGINX_PID=$!
until [[ -n "$(requests 2>/dev/null)" ]]; do sleep 0.5; done
[[ "$(curl -s "http://127.0.0.1:$HTTP_PORT/fill")" == ok ]] || { echo "cost: could not write the sessions" >&2; exit 1; }

paths=()
IFS=, read -ra ops <<< "$OPS"
for op in "${ops[@]}"; do paths+=("single/$op" "cluster/$op" "sentinel/$op"); done

# Instructions per request of a path under wrk, from a callgrind dump; a failed request fails.
measure() { # $1: path
    local before after dump name=${1//\//_}
    before=$(requests)
    callgrind_control -z "$NGINX_PID" >/dev/null 2>&1
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_PATH}s" "http://127.0.0.1:$HTTP_PORT/$1" > "$STATE/wrk.$name"
    callgrind_control -d "$NGINX_PID" >/dev/null 2>&1
    after=$(requests)
    if grep -q "Non-2xx" "$STATE/wrk.$name"; then
        echo "cost: $1 answered errors: $(grep -m1 -v '^\s*$' "$STATE/error.log" || true)" >&2
        exit 1
    fi
    dump=$(ls -t "$STATE"/cg.out.* | head -1)
    mv "$dump" "$STATE/callgrind.$name"
    echo $(( $(awk '/^(summary|totals):/ { print $2; exit }' "$STATE/callgrind.$name") / (after - before) ))
}

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
echo "cost: storage instructions per request (minus a no-op request's, $noop); dumps in $STATE"
