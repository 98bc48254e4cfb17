#!/bin/bash
# What counting (stats()) costs a cosocket `get`, in user-space instructions: the
# steady figure where CPU time per request on a 2-core VM moves by more than the
# cost (make bench's statistics rows). A real nginx worker runs under callgrind,
# one nginx per setting (counting on or off from init_by_lua, so both run the same
# code), settings alternating; per setting and run: instructions per request of a
# `get` minus those of a no-op request of the same process.
#   bench/stats_cost.sh [connections] [runs]      (make bench-stats-cost)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONNS=${1:-32}
RUNS=${2:-3}
ROOT=$PWD
BUILD=${RSH_BUILD_DIR:-build}
MODULES=/usr/lib/nginx/modules
[ -f "$MODULES/ngx_http_lua_module.so" ] || { echo "stats_cost: needs libnginx-mod-http-lua" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "stats_cost: needs valgrind" >&2; exit 1; }

STATE="$(mktemp -d "${TMPDIR:-/tmp}/rsh-stats-cost.XXXXXX")"
NGINX_PID=""
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  [ -f "$STATE/redis.pid" ] && kill "$(cat "$STATE/redis.pid")" 2>/dev/null
  rm -rf "$STATE"
}
trap cleanup EXIT

free_port() { luajit -e 'local s = require("socket").bind("127.0.0.1", 0); local _, port = s:getsockname(); print(port); s:close()'; }
REDIS_PORT=$(free_port)
HTTP_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --daemonize yes \
  --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" --dir "$STATE"
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli -p "$REDIS_PORT" set session:k "$(head -c 512 /dev/zero | tr '\0' x)" >/dev/null

conf() { # $1: dir, $2: true | false
  cat <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $1/error.log warn;
pid $1/nginx.pid;
load_module $MODULES/ndk_http_module.so;
load_module $MODULES/ngx_http_lua_module.so;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  lua_package_path "$ROOT/lua/?.lua;;";
  lua_package_cpath "$ROOT/$BUILD/lib/?.so;;";
  init_by_lua_block { H = require "resty.session.hiredis"; H.stats_enabled($2); N = 0 }
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location /get {
      content_by_lua_block {
        S = S or H.new({ host = "127.0.0.1", port = $REDIS_PORT })
        local v = S:get("session", "k")
        N = N + 1
        ngx.print(v and "ok" or "nil")
      }
    }
    location /noop {
      content_by_lua_block {
        S = S or H.new({ host = "127.0.0.1", port = $REDIS_PORT })
        N = N + 1
        ngx.print("ok")
      }
    }
    location /count { content_by_lua_block { ngx.print(N) } }
  }
}
CONF
}

requests() { curl -s "http://127.0.0.1:$HTTP_PORT/count"; }

# Instructions per request of one path under wrk (8 s), from a callgrind dump.
measure() { # $1: dir, $2: path
  local before after dump
  before=$(requests)
  callgrind_control -z "$NGINX_PID" >/dev/null 2>&1
  wrk -t1 -c"$CONNS" -d8s "http://127.0.0.1:$HTTP_PORT/$2" >/dev/null
  callgrind_control -d "$NGINX_PID" >/dev/null 2>&1
  after=$(requests)
  dump=$(ls -t "$1"/cg.out.* | head -1)
  echo $(( $(awk '/^(summary|totals):/ { print $2; exit }' "$dump") / (after - before) ))
}

declare -A storage
echo "stats_cost: callgrind, one get per request, $CONNS connections, $RUNS runs per setting"
for run in $(seq 1 "$RUNS"); do
  if (( run % 2 )); then order="true false"; else order="false true"; fi
  for counting in $order; do
    dir="$STATE/$counting$run"
    mkdir -p "$dir"
    conf "$dir" "$counting" > "$dir/nginx.conf"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --smc-check=all-non-file \
      nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/valgrind.log" &
    NGINX_PID=$!
    until requests >/dev/null 2>&1 && [ -n "$(requests)" ]; do sleep 0.5; done
    wrk -t1 -c"$CONNS" -d10s "http://127.0.0.1:$HTTP_PORT/get" >/dev/null  # warm-up: traces
    wrk -t1 -c"$CONNS" -d4s "http://127.0.0.1:$HTTP_PORT/noop" >/dev/null
    noop=$(measure "$dir" noop)
    get=$(measure "$dir" get)
    storage[$counting]+="$((get - noop)) "
    echo "run $run counting=$counting: get $get, no-op $noop, storage $((get - noop)) instructions per request"
    kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
on=$(echo "${storage[true]}" | median)
off=$(echo "${storage[false]}" | median)
awk -v on="$on" -v off="$off" 'BEGIN { printf "stats_cost: storage instructions per get, medians: counting on %d, off %d: %+d (%+.1f%%)\n", on, off, on - off, (on - off) * 100 / off }'
