#!/usr/bin/env bash
# Runs a command against a throwaway Redis Sentinel group on free loopback ports:
# a master and a replica (requirepass/masterauth), three sentinels (their own
# requirepass) monitoring them as "mymaster", with fast failure detection.
#
#   spec/support/with-sentinels.sh CMD [ARGS...]
#
# Exports HIREDIS_SENTINEL_PORTS ("p1,p2,p3"), HIREDIS_SENTINEL_PASSWORD,
# HIREDIS_SENTINEL_MASTER_PASSWORD, HIREDIS_SENTINEL_DATA_PORTS ("master,replica"
# as started), HIREDIS_SENTINEL_DIR (configs, logs; a server a spec restarts writes
# its pid to <dir>/<name>.pid so that it is stopped here too). Always stops every
# process it or a spec started and removes the directory. Exits with CMD's status.
#
# WITH_SENTINELS_DOWN_AFTER_MS (default 2000): the sentinels' down-after-milliseconds
# for both groups (the specs' fast failure detection; make bench sets a long one, so
# that a master slow to answer under load is not failed over).
#
# With the test certificates of with-servers.sh (HIREDIS_TEST_CERTS, when it runs a
# TLS server), also:
#   - the sentinels above listen on a TLS port too (a mixed deployment: TLS to the
#     sentinels, plain data nodes): HIREDIS_SENTINEL_MIXED_TLS_PORTS;
#   - a TLS-only group, "tlsmaster": master and replica with `port 0` and `tls-port`,
#     replicating over TLS, three sentinels with `port 0` and `tls-port` reaching them
#     over TLS (tls-replication): HIREDIS_SENTINEL_TLS_PORTS, HIREDIS_SENTINEL_TLS_DATA_PORTS
#     ("master,replica"), the same passwords; the servers' certificate is for
#     127.0.0.1/localhost, signed by HIREDIS_SENTINEL_TLS_CA; no client certificate needed.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "with-sentinels: $tool not found (make deps)" >&2; exit 2; }
done

# SERVER_VERSION and the directives that depend on it
# shellcheck source=spec/support/server-release.sh
. "$(dirname "${BASH_SOURCE[0]}")/server-release.sh"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/rsh-sentinel.XXXXXX")"
DOWN_AFTER_MS="${WITH_SENTINELS_DOWN_AFTER_MS:-2000}"
MASTER_PASSWORD="master-$RANDOM$RANDOM"
SENTINEL_PASSWORD="sentinel-$RANDOM$RANDOM"
USED_PORTS=" "
CMD_PID=""

log() { echo "with-sentinels: $*" >&2; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$CMD_PID" ]]; then
        kill -TERM "$CMD_PID" 2>/dev/null || true
        wait "$CMD_PID" 2>/dev/null || true
    fi
    local f pid i
    for f in "$DIR"/*.pid; do
        [[ -f "$f" ]] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    for f in "$DIR"/*.pid; do
        [[ -f "$f" ]] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        [[ -n "$pid" ]] || continue
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port
    while :; do
        # below the ephemeral range (32768-60999): no outgoing connection holds it
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
        [[ "$USED_PORTS" == *" $port "* ]] && continue
        port_in_use "$port" && continue
        USED_PORTS+="$port "
        FREE_PORT=$port
        return
    done
}

common_config() {
    local name=$1 port=$2
    mkdir -p "$DIR/$name.data"
    echo "bind 127.0.0.1"
    echo "port $port"
    echo "protected-mode no"
    echo "daemonize yes"
    echo "pidfile $DIR/$name.pid"
    echo "dir $DIR/$name.data"
    echo "logfile $DIR/$name.log"
}

# Waits until redis-cli ARGS... answers PONG.
wait_pong() {
    local i
    for i in $(seq 1 100); do
        [[ "$(redis-cli --no-auth-warning "$@" ping 2>/dev/null)" == "PONG" ]] && return 0
        sleep 0.05
    done
    return 1
}

CERTS="${HIREDIS_TEST_CERTS:-}"
with_tls=0
[[ -n "$CERTS" && -f "$CERTS/server.crt" && -f "$CERTS/ca.crt" ]] && with_tls=1

# TLS settings of a server (or sentinel) of the tests' CA.
tls_config() {
    echo "tls-cert-file $CERTS/server.crt"
    echo "tls-key-file $CERTS/server.key"
    echo "tls-ca-cert-file $CERTS/ca.crt"
    echo "tls-auth-clients no"
}

free_port; MASTER_PORT=$FREE_PORT
free_port; REPLICA_PORT=$FREE_PORT
for name in master replica; do
    port=$MASTER_PORT
    [[ $name == replica ]] && port=$REPLICA_PORT
    {
        common_config "$name" "$port"
        echo "save \"\""
        echo "appendonly no"
        echo "requirepass $MASTER_PASSWORD"
        echo "masterauth $MASTER_PASSWORD"
        echo "repl-diskless-sync yes"
        echo "repl-diskless-sync-delay 0"
        debug_directive
        [[ $name == replica ]] && echo "replicaof 127.0.0.1 $MASTER_PORT"
    } >"$DIR/$name.conf"
    redis-server "$DIR/$name.conf" >>"$DIR/$name.out" 2>&1
    wait_pong -p "$port" -a "$MASTER_PASSWORD" || { log "$name did not start"; tail -5 "$DIR/$name.log" >&2; exit 1; }
done

SENTINEL_PORTS=()
MIXED_TLS_PORTS=()
for i in 1 2 3; do
    free_port
    SENTINEL_PORTS+=("$FREE_PORT")
    {
        common_config "sentinel$i" "$FREE_PORT"
        if [[ $with_tls -eq 1 ]]; then
            free_port
            MIXED_TLS_PORTS+=("$FREE_PORT")
            echo "tls-port $FREE_PORT"
            tls_config
        fi
        echo "sentinel monitor mymaster 127.0.0.1 $MASTER_PORT 2"
        echo "sentinel auth-pass mymaster $MASTER_PASSWORD"
        echo "sentinel down-after-milliseconds mymaster $DOWN_AFTER_MS"
        echo "sentinel failover-timeout mymaster 6000"
        echo "sentinel parallel-syncs mymaster 1"
        echo "requirepass $SENTINEL_PASSWORD"
    } >"$DIR/sentinel$i.conf"
    redis-server "$DIR/sentinel$i.conf" --sentinel >>"$DIR/sentinel$i.out" 2>&1
done
for port in "${SENTINEL_PORTS[@]}"; do
    wait_pong -p "$port" -a "$SENTINEL_PASSWORD" || { log "sentinel on $port did not start"; exit 1; }
done

# Ready when the replica is in sync and every sentinel sees the replica and the
# two other sentinels (a killed master then gets its quorum and a leader).
#   group_ready NAME LOG REPLICA_PORT "SENTINEL_PORT..." [redis-cli options...]
group_ready() {
    local name=$1 logfile=$2 replica=$3 sentinels=$4 i port info ready=0
    shift 4
    for i in $(seq 1 200); do
        ready=1
        [[ "$(redis-cli --no-auth-warning "$@" -p "$replica" -a "$MASTER_PASSWORD" info replication 2>/dev/null |
              tr -d '\r' | grep '^master_link_status:')" == "master_link_status:up" ]] || ready=0
        for port in $sentinels; do
            info=$(redis-cli --no-auth-warning "$@" -p "$port" -a "$SENTINEL_PASSWORD" info sentinel 2>/dev/null |
                   tr -d '\r')
            [[ "$info" == *"slaves=1,sentinels=3"* ]] || ready=0
        done
        [[ $ready -eq 1 ]] && return 0
        sleep 0.1
    done
    log "$name not ready"
    tail -5 "$logfile" >&2
    exit 1
}
group_ready "sentinel group" "$DIR/sentinel1.log" "$REPLICA_PORT" "${SENTINEL_PORTS[*]}"

# The TLS-only group.
if [[ $with_tls -eq 1 ]]; then
    TLS_CLI=(--tls --cacert "$CERTS/ca.crt")
    free_port; TLS_MASTER_PORT=$FREE_PORT
    free_port; TLS_REPLICA_PORT=$FREE_PORT
    for name in tlsmaster tlsreplica; do
        port=$TLS_MASTER_PORT
        [[ $name == tlsreplica ]] && port=$TLS_REPLICA_PORT
        {
            common_config "$name" 0
            echo "tls-port $port"
            tls_config
            echo "tls-replication yes"
            echo "save \"\""
            echo "appendonly no"
            echo "requirepass $MASTER_PASSWORD"
            echo "masterauth $MASTER_PASSWORD"
            echo "repl-diskless-sync yes"
            echo "repl-diskless-sync-delay 0"
            [[ $name == tlsreplica ]] && echo "replicaof 127.0.0.1 $TLS_MASTER_PORT"
        } >"$DIR/$name.conf"
        redis-server "$DIR/$name.conf" >>"$DIR/$name.out" 2>&1
        wait_pong "${TLS_CLI[@]}" -p "$port" -a "$MASTER_PASSWORD" \
            || { log "$name did not start"; tail -5 "$DIR/$name.log" >&2; exit 1; }
    done
    TLS_SENTINEL_PORTS=()
    for i in 1 2 3; do
        free_port
        TLS_SENTINEL_PORTS+=("$FREE_PORT")
        {
            common_config "tlssentinel$i" 0
            echo "tls-port $FREE_PORT"
            tls_config
            echo "tls-replication yes"
            echo "sentinel monitor tlsmaster 127.0.0.1 $TLS_MASTER_PORT 2"
            echo "sentinel auth-pass tlsmaster $MASTER_PASSWORD"
            echo "sentinel down-after-milliseconds tlsmaster $DOWN_AFTER_MS"
            echo "sentinel failover-timeout tlsmaster 6000"
            echo "requirepass $SENTINEL_PASSWORD"
        } >"$DIR/tlssentinel$i.conf"
        redis-server "$DIR/tlssentinel$i.conf" --sentinel >>"$DIR/tlssentinel$i.out" 2>&1
    done
    for port in "${TLS_SENTINEL_PORTS[@]}"; do
        wait_pong "${TLS_CLI[@]}" -p "$port" -a "$SENTINEL_PASSWORD" \
            || { log "TLS sentinel on $port did not start"; exit 1; }
    done
    group_ready "TLS sentinel group" "$DIR/tlssentinel1.log" "$TLS_REPLICA_PORT" "${TLS_SENTINEL_PORTS[*]}" \
        "${TLS_CLI[@]}"
    export HIREDIS_SENTINEL_TLS_PORTS HIREDIS_SENTINEL_MIXED_TLS_PORTS
    HIREDIS_SENTINEL_TLS_PORTS=$(IFS=,; echo "${TLS_SENTINEL_PORTS[*]}")
    HIREDIS_SENTINEL_MIXED_TLS_PORTS=$(IFS=,; echo "${MIXED_TLS_PORTS[*]}")
    export HIREDIS_SENTINEL_TLS_DATA_PORTS="$TLS_MASTER_PORT,$TLS_REPLICA_PORT"
    export HIREDIS_SENTINEL_TLS_CA="$CERTS/ca.crt"
    log "TLS sentinel group ready: master=$TLS_MASTER_PORT replica=$TLS_REPLICA_PORT sentinels=$HIREDIS_SENTINEL_TLS_PORTS"
fi

export HIREDIS_SENTINEL_PORTS
HIREDIS_SENTINEL_PORTS=$(IFS=,; echo "${SENTINEL_PORTS[*]}")
export HIREDIS_SENTINEL_PASSWORD="$SENTINEL_PASSWORD"
export HIREDIS_SENTINEL_MASTER_PASSWORD="$MASTER_PASSWORD"
export HIREDIS_SENTINEL_DATA_PORTS="$MASTER_PORT,$REPLICA_PORT"
export HIREDIS_SENTINEL_DIR="$DIR"
log "sentinel group ready: master=$MASTER_PORT replica=$REPLICA_PORT sentinels=$HIREDIS_SENTINEL_PORTS"

exec 3<&0
"$@" <&3 3<&- &
CMD_PID=$!
set +e
wait "$CMD_PID"
status=$?
CMD_PID=""
set -e
exit "$status"
