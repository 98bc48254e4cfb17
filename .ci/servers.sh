#!/usr/bin/env bash
# make servers: the given spec files against other server releases than the system's.
#
#   .ci/servers.sh [--failover SERVERS] SERVER... -- SPEC...
#
# SERVER is one of
#   redis6   Redis 6.0  Debian 11 (bullseye) redis-server
#   redis7   Redis 7.0  the system's redis-server (Debian 12), as make test uses it
#   redis8   Redis 8.0  Debian 13 (trixie) redis-server
#   valkey8  Valkey 8.1 Debian 13 (trixie) valkey-server
# The packages are fetched by .ci/fetch-deb.sh (private apt state, the system's Debian 12
# source renamed; unpacked, never installed) into $SERVERS_DIR/<release>/root. Each fetched
# server gets a bin directory holding a `redis-server` wrapper, put first on PATH for its
# run (the specs and spec/support/*.sh start `redis-server CONF [--sentinel]`):
#   - Debian 13's binaries need glibc 2.38: the wrapper runs them through the loader that
#     came with them (their libc6), with only their own library directory
#     (`ld.so --inhibit-cache --library-path ... --argv0 redis-server BINARY`);
#   - Debian 11's run on the system's glibc, which is newer: the wrapper only puts their
#     library directory first (LD_LIBRARY_PATH; libssl1.1, lua-bitop... are not Debian 12's).
# redis-cli stays the system's (7.0): it talks to every one of them.
#
# Before the specs, every wrapper is checked: `redis-server --version` must name the
# expected release, and every library it loads must resolve (for Debian 13's: inside its
# prefix). Each server then runs SPEC... in one busted under spec/support/with-servers.sh
# and with-sentinels.sh (as make spec), in make spec's order; the failover specs
# (spec/*/failover_spec.lua among SPEC) only on the servers of --failover (default: all).
# The version the started server reports (INFO server) is recorded.
#
# Prints one line per server at the end (version, busted's counts, wall seconds) and each
# failed or erroring test with its first message line; the whole busted output of a server
# is in $SERVERS_DIR/<server>.log. Exits 1 when any server failed to set up or any spec
# failed. LUAJIT, BUSTED: as for make spec; SERVERS_DIR (default build-servers).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

LUAJIT=${LUAJIT:-luajit}
BUSTED=${BUSTED:-/usr/bin/busted}
SERVERS_DIR=${SERVERS_DIR:-build-servers}
me="servers"

failover_on=""
if [[ "${1:-}" == --failover ]]; then
    failover_on=" ${2//,/ } "
    shift 2
fi
servers=()
while [[ $# -gt 0 && "$1" != -- ]]; do
    servers+=("$1")
    shift
done
[[ "${1:-}" == -- ]] && shift
specs=("$@")
if [[ ${#servers[@]} -eq 0 || ${#specs[@]} -eq 0 ]]; then
    echo "usage: $0 [--failover SERVERS] SERVER... -- SPEC..." >&2
    exit 2
fi
[[ -n "$failover_on" ]] || failover_on=" ${servers[*]} "

# Per release: the packages, libraries included (readelf -d on the binaries, then on the
# libraries they pull in; the load check below fails when one is missing).
BULLSEYE_DEBS=(redis-server redis-tools libssl1.1 lua-bitop lua-cjson liblua5.1-0 liblzf1 libjemalloc2)
TRIXIE_DEBS=(redis-server redis-tools valkey-server valkey-tools libc6 libgcc-s1 libstdc++6 libatomic1
    libssl3t64 zlib1g libzstd1 libjemalloc2 liblzf1 libsystemd0 libcap2)
MULTIARCH="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)"

# release, binary inside the prefix, what `--version` must start with
server_release() {
    case "$1" in
        redis6) echo "bullseye usr/bin/redis-server Redis.server.v=6.0." ;;
        redis7) echo "system - Redis.server.v=7.0." ;;
        redis8) echo "trixie usr/bin/redis-server Redis.server.v=8.0." ;;
        valkey8) echo "trixie usr/bin/valkey-server Valkey.server.v=8.1." ;;
        *) return 1 ;;
    esac
}

mkdir -p "$SERVERS_DIR"
SERVERS_DIR="$(cd "$SERVERS_DIR" && pwd)"

fetch_release() {
    local release=$1
    case "$release" in
        bullseye) .ci/fetch-deb.sh "$SERVERS_DIR/$release" bookworm bullseye "${BULLSEYE_DEBS[@]}" ;;
        trixie) .ci/fetch-deb.sh "$SERVERS_DIR/$release" bookworm trixie "${TRIXIE_DEBS[@]}" ;;
    esac
}

# The command that runs server $1's binary (release $2, $3 inside the prefix), in CMD,
# with the environment CMD_ENV (NAME=VALUE...);
# make_wrapper writes it into $SERVERS_DIR/bin/<server>/redis-server and prints that bin
# directory ("" for the system's server, whose redis-server stays the one on PATH).
CMD=() CMD_ENV=()
server_command() {
    local server=$1 release=$2 binary=$3 root loader libs
    CMD=() CMD_ENV=()
    [[ "$release" == system ]] && return 0
    root="$(fetch_release "$release")" || return 1
    [[ -x "$root/$binary" ]] || { echo "$me: $server: no $binary in $root" >&2; return 1; }
    libs="$root/usr/lib/$MULTIARCH:$root/lib/$MULTIARCH"
    case "$release" in
        trixie)
            # glibc 2.38+: its own loader, no ld.so.cache (the system's libraries)
            for loader in "$root/usr/lib/$MULTIARCH"/ld-linux*.so.[0-9]; do break; done
            [[ -e "$loader" ]] || { echo "$me: $server: no loader in $root" >&2; return 1; }
            CMD=("$loader" --inhibit-cache --library-path "$libs" --argv0 redis-server "$root/$binary")
            ;;
        bullseye)
            # the system's glibc is newer: only its own libraries first
            CMD_ENV=("LD_LIBRARY_PATH=$libs")
            CMD=("$root/$binary")
            ;;
    esac
}
make_wrapper() {
    local server=$1 bin="$SERVERS_DIR/bin/$1"
    [[ ${#CMD[@]} -gt 0 ]] || return 0
    mkdir -p "$bin"
    {
        echo "#!/bin/sh"
        echo "# $server (generated by .ci/servers.sh)"
        [[ ${#CMD_ENV[@]} -eq 0 ]] || printf "export '%s'\n" "${CMD_ENV[@]}"
        printf 'exec'
        printf " '%s'" "${CMD[@]}"
        printf ' "$@"\n'
    } >"$bin/redis-server"
    chmod +x "$bin/redis-server"
    echo "$bin"
}

# Checks the redis-server found on PATH with bin directory $2 first: the wrapper, the
# expected version $3, every library of CMD found (inside prefix $4 when given).
check_server() {
    local server=$1 bin=$2 expect=$3 prefix=$4 path version libs
    path="${bin:+$bin:}$PATH"
    [[ -z "$bin" || "$(PATH="$path" command -v redis-server)" == "$bin/redis-server" ]] || {
        echo "$me: $server: redis-server on PATH is not the wrapper" >&2; return 1; }
    version="$(PATH="$path" redis-server --version 2>&1)"
    echo "$me: $server: $version" >&2
    [[ "$version" =~ ^$expect ]] || { echo "$me: $server: expected ${expect//./ }..." >&2; return 1; }
    [[ ${#CMD[@]} -gt 0 ]] || return 0
    libs="$(env "${CMD_ENV[@]}" LD_TRACE_LOADED_OBJECTS=1 "${CMD[@]}" 2>&1)" || {
        echo "$me: $server: the loader failed:" >&2; echo "$libs" >&2; return 1; }
    if grep -q 'not found' <<<"$libs"; then
        echo "$me: $server: missing libraries:" >&2; grep 'not found' <<<"$libs" >&2; return 1
    fi
    if [[ -n "$prefix" ]] && awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$libs" | grep -qv "^$prefix/"; then
        echo "$me: $server: libraries from outside $prefix:" >&2
        awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$libs" | grep -v "^$prefix/" >&2
        return 1
    fi
}

# The failed and erroring tests of busted log $1 (spec/support/summary_last.lua's details),
# two lines each: FILE:LINE NAME, then the message's first line and, for an assertion, the
# value it was passed (shortened).
failures_of() {
    awk '
        function flush() {
            if (head == "") return
            gsub(/[ \t]+/, " ", passed); gsub(/\(table: 0x[0-9a-f]+\)/, "(table)", passed); sub(/^ /, "", passed)
            if (passed != "") msg = msg " | passed in: " passed
            if (length(msg) > 220) msg = substr(msg, 1, 217) "..."
            print "  " head "\n      " msg
            head = ""
        }
        /^(Failure|Error) -> / { flush(); head = $1 " " $3 ":" $5; getline name; head = head " " name
                                 getline msg; passed = ""; state = 1; next }
        head != "" && /^Passed in:$/ { state = 2; next }
        head != "" && (/^Expected:$/ || /^$/) { state = 0; next }
        head != "" && state == 2 { passed = passed " " $0; next }
        END { flush() }
    ' "$1"
}

declare -A RESULT=() VERSION=() SECONDS_OF=()
status=0
for server in "${servers[@]}"; do
    read -r release binary expect < <(server_release "$server") || {
        echo "$me: unknown server '$server' (redis6 redis7 redis8 valkey8)" >&2; exit 2; }
    log="$SERVERS_DIR/$server.log"
    rm -f "$log" "$SERVERS_DIR/$server.info"
    t0=$(date +%s)
    prefix=""
    [[ "$release" == trixie ]] && prefix="$SERVERS_DIR/$release/root"
    if ! server_command "$server" "$release" "$binary" || ! bin="$(make_wrapper "$server")" ||
        ! check_server "$server" "$bin" "$expect" "$prefix"; then
        RESULT[$server]="setup failed"
        status=1
        continue
    fi
    run=()
    for f in "${specs[@]}"; do
        if [[ "$f" == */failover_spec.lua && "$failover_on" != *" $server "* ]]; then continue; fi
        run+=("$f")
    done
    mapfile -t run < <(printf '%s\n' "${run[@]}" | LC_ALL=C sort -u)
    echo "$me: $server: ${#run[@]} spec files, output in $log" >&2
    # The INFO of the data server the specs use first, then busted.
    # shellcheck disable=SC2016
    PATH="${bin:+$bin:}$PATH" spec/support/with-servers.sh spec/support/with-sentinels.sh \
        bash -c 'redis-cli -p "$HIREDIS_TEST_PORT" info server >"$0" 2>&1; exec "$@"' \
        "$SERVERS_DIR/$server.info" "$LUAJIT" "$BUSTED" "${run[@]}" >"$log" 2>&1
    rc=$?
    SECONDS_OF[$server]=$(( $(date +%s) - t0 ))
    info="$(tr -d '\r' <"$SERVERS_DIR/$server.info" 2>/dev/null)"
    VERSION[$server]="$(awk -F: '$1 == "valkey_version" { v = "valkey " $2 } $1 == "redis_version" && !r { r = "redis " $2 }
        END { print (v != "" ? v : r) }' <<<"$info")"
    summary="$(grep -E '^[0-9]+ success(es)? / ' "$log" | tail -n 1)"
    RESULT[$server]="${summary:-no busted summary (exit $rc)}"
    [[ $rc -eq 0 ]] || status=1
    echo "$me: $server: ${VERSION[$server]:-version unknown}: ${RESULT[$server]} (${SECONDS_OF[$server]} s)" >&2
done

echo
echo "servers: per server (version from INFO server; busted counts; wall seconds, fetching and the servers' start included):"
for server in "${servers[@]}"; do
    printf '%-8s %-16s %s (%s s)\n' "$server" "${VERSION[$server]:--}" "${RESULT[$server]}" "${SECONDS_OF[$server]:--}"
    [[ -f "$SERVERS_DIR/$server.log" ]] && failures_of "$SERVERS_DIR/$server.log"
done
exit $status
