#!/usr/bin/env bash
# make leak-lua51: the module under PUC Lua 5.1, where errors are longjmps that run no
# C++ destructors, and valgrind. Two scripts, each must leave nothing definitely lost:
#   erroring_calls.lua  (lua5.1) calls that fail: bad configurations, field writes,
#                       method arguments, metadata whose reads raise
#   oom_calls.lua       (tests/lua51/oom_host.c) every allocation of a call failing in
#                       turn; the native transport's calls when HIREDIS_TEST_PORT is set
#
#   spec/support/with-servers.sh --only plain spec/valgrind/leak-lua51.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build="${1:-build}"
host="$build/lua51_oom_host"
cc -std=c99 -Wall -Wextra -g -O1 $(pkg-config --cflags lua5.1) tests/lua51/oom_host.c \
    $(pkg-config --libs lua5.1) -ldl -o "$host"

export LUA_PATH="lua/?.lua" LUA_CPATH="$build/lib/?.so"
status=0
check() {
    local name=$1 log
    shift
    log="$(mktemp)"
    if valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
        --log-file="$log" "$@"; then
        grep -E 'definitely lost' "$log" | sed "s/^==[0-9]*== */leak-lua51: $name: /"
    else
        cat "$log"
        echo "leak-lua51: $name: FAILED" >&2
        status=1
    fi
    rm -f "$log"
}
check erroring_calls lua5.1 spec/valgrind/erroring_calls.lua
# The module stays mapped after lua_close: its process-lifetime pools stay reachable.
OOM_HOST_KEEP_LOADED="$build/lib/resty/session/hiredis/core.so" check oom_calls "$host" spec/valgrind/oom_calls.lua
exit $status
