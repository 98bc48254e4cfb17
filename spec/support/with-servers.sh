#!/usr/bin/env bash
# Runs a command against throwaway redis-server instances on free loopback ports.
#
#   spec/support/with-servers.sh [--only NAME[,NAME...]] CMD [ARGS...]
#
# Servers (all bound to 127.0.0.1 and, when available, ::1):
#   plain       TCP port + unix socket
#   pass        requirepass
#   acl         ACL user "app" plus a default user with another password
#   tls         TLS only, server certificate signed by the test CA
#   tls_client  like tls, client certificates required (tls-auth-clients yes)
#   tls_self    TLS with a self-signed certificate
#   tls_other   TLS with a CA-signed certificate for another name (other.invalid)
#   cluster     Redis Cluster: 3 masters + 3 replicas (cluster-node-timeout 2000),
#               requirepass on every node plus an ACL user "app" (see start_cluster)
#   cluster_tls the same cluster over TLS only: `port 0`, `tls-port`, tls-cluster and
#               tls-replication; server certificate for 127.0.0.1/localhost signed by
#               the test CA, nodes present the test client certificate on the bus
#
# WITH_SERVERS_CLUSTER_BACKGROUND=1: CMD starts once the cluster's nodes run, while
# `redis-cli --cluster create` and the wait for cluster_state:ok (about 2 s) go on in
# the background; the file $HIREDIS_TEST_CLUSTER_READY then reads "ready" or "failed"
# (the benchmark uses it; the specs need the cluster up from the start).
#
# Exports HIREDIS_TEST_* variables (see below), runs CMD, then always stops every
# server and removes the temporary directory. Exits with CMD's status.
set -euo pipefail

ALL_SERVERS="plain pass acl tls tls_client tls_self tls_other cluster cluster_tls"
only=""
if [[ "${1:-}" == "--only" ]]; then
    only="${2:?--only needs a comma-separated list of servers}"
    shift 2
elif [[ "${1:-}" == --only=* ]]; then
    only="${1#--only=}"
    shift
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--only NAME[,NAME...]] CMD [ARGS...]" >&2
    exit 2
fi

servers="$ALL_SERVERS"
if [[ -n "$only" ]]; then
    servers="${only//,/ }"
    for s in $servers; do
        [[ " $ALL_SERVERS " == *" $s "* ]] || { echo "with-servers: unknown server '$s'" >&2; exit 2; }
    done
fi

for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "with-servers: $tool not found (make deps)" >&2; exit 2; }
done

# SERVER_VERSION and the directives that depend on it
# shellcheck source=spec/support/server-release.sh
. "$(dirname "${BASH_SOURCE[0]}")/server-release.sh"

TMP_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/rsh.XXXXXX")"
declare -A PIDS=()
declare -A PORTS=()
USED_PORTS=" "

log() { echo "with-servers: $*" >&2; }

CMD_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    if [[ -n "$CMD_PID" ]]; then
        kill -TERM "$CMD_PID" 2>/dev/null || true
        wait "$CMD_PID" 2>/dev/null || true
    fi
    # cluster nodes a spec restarted (daemonized) are known by their pid files only
    local pidfile
    for pidfile in "$TMP_ROOT"/cluster*/*.pid; do
        [[ -f "$pidfile" ]] && PIDS["$pidfile"]="$(cat "$pidfile" 2>/dev/null || true)"
    done
    for pid in "${PIDS[@]}"; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        [[ -n "$pid" ]] || continue
        local i
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP_ROOT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port in 20000-31999 that nothing listens on (checked with bash's /dev/tcp)
# and that this script has not handed out yet.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
# Sets FREE_PORT (not echoed: a command substitution's subshell would lose USED_PORTS).
free_port() {
    local port
    while :; do
        # below the ephemeral range (32768-60999), where a busy machine's outgoing
        # connections hold ports a server then cannot bind
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
        [[ "$USED_PORTS" == *" $port "* ]] && continue
        port_in_use "$port" && continue
        USED_PORTS+="$port "
        FREE_PORT=$port
        return
    done
}

PASSWORD="pass-$RANDOM$RANDOM-secret"
ACL_USER="app"
ACL_PASSWORD="apppass"
ACL_DEFAULT_PASSWORD="default-$RANDOM$RANDOM-secret"
CERTS="$TMP_ROOT/certs"

need_tls=0
for s in $servers; do [[ "$s" == tls* || "$s" == cluster_tls ]] && need_tls=1; done

make_certs() {
    mkdir -p "$CERTS"
    local cnf="$CERTS/openssl.cnf"
    cat >"$cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[other]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[self]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
[node]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    local name signed="server other client"
    [[ $SERVER_VERSION -ge 602 ]] || signed+=" node"
    for name in ca self $signed; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$name.key" 2>/dev/null
    done
    openssl req -new -x509 -config "$cnf" -extensions ca -key "$CERTS/ca.key" \
        -subj "/CN=lua-resty-session-hiredis test CA" -days 2 -out "$CERTS/ca.crt"
    openssl req -new -x509 -config "$cnf" -extensions self -key "$CERTS/self.key" \
        -subj "/CN=localhost" -days 2 -out "$CERTS/self.crt"
    local cn
    for name in $signed; do
        case "$name" in
            server | node) cn=localhost ;;
            other) cn=other.invalid ;;
            client) cn=app-client ;;
        esac
        openssl req -new -config "$cnf" -key "$CERTS/$name.key" -subj "/CN=$cn" -out "$CERTS/$name.csr"
        openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
            -set_serial "$((RANDOM * 32768 + RANDOM))" -days 2 \
            -extfile "$cnf" -extensions "$name" -out "$CERTS/$name.crt" 2>/dev/null
        rm -f "$CERTS/$name.csr"
    done
    chmod 644 "$CERTS"/*.key
}

# redis-cli arguments reaching server $1 (for PING and the IPv6 probe).
cli_args() {
    local name=$1 port=${PORTS[$1]}
    case "$name" in
        plain) echo "-p $port" ;;
        pass) echo "-p $port --user default --pass $PASSWORD" ;;
        acl) echo "-p $port --user $ACL_USER --pass $ACL_PASSWORD" ;;
        tls) echo "-p $port --tls --cacert $CERTS/ca.crt" ;;
        tls_client) echo "-p $port --tls --cacert $CERTS/ca.crt --cert $CERTS/client.crt --key $CERTS/client.key" ;;
        tls_self) echo "-p $port --tls --insecure" ;;
        tls_other) echo "-p $port --tls --cacert $CERTS/ca.crt" ;;
    esac
}

write_config() {
    local name=$1 port=$2 conf="$TMP_ROOT/$1.conf"
    mkdir -p "$TMP_ROOT/$name.data"
    {
        bind_directive
        echo "protected-mode no"
        echo "daemonize no"
        echo "save \"\""
        echo "appendonly no"
        debug_directive
        echo "dir $TMP_ROOT/$name.data"
        echo "logfile $TMP_ROOT/$name.log"
        echo "loglevel notice"
        case "$name" in
            tls*) echo "port 0"; echo "tls-port $port" ;;
            *) echo "port $port" ;;
        esac
        case "$name" in
            plain)
                echo "unixsocket $TMP_ROOT/plain.sock"
                echo "unixsocketperm 777"
                ;;
            pass)
                echo "requirepass $PASSWORD"
                ;;
            acl)
                echo "requirepass $ACL_DEFAULT_PASSWORD"
                echo "user $ACL_USER on >$ACL_PASSWORD ~*$(acl_channels) +@all"
                ;;
            tls | tls_client | tls_other)
                local cert=server
                [[ "$name" == tls_other ]] && cert=other
                echo "tls-cert-file $CERTS/$cert.crt"
                echo "tls-key-file $CERTS/$cert.key"
                echo "tls-ca-cert-file $CERTS/ca.crt"
                if [[ "$name" == tls_client ]]; then
                    echo "tls-auth-clients yes"
                else
                    echo "tls-auth-clients no"
                fi
                ;;
            tls_self)
                echo "tls-cert-file $CERTS/self.crt"
                echo "tls-key-file $CERTS/self.key"
                echo "tls-ca-cert-file $CERTS/ca.crt"
                echo "tls-auth-clients no"
                ;;
        esac
    } >"$conf"
}

# Starts server $1 on a fresh port; retries with another port when the first dies
# (e.g. the port was taken between the check and the bind).
start_server() {
    local name=$1 attempt
    for attempt in 1 2 3 4 5; do
        free_port
        local port=$FREE_PORT
        PORTS[$name]=$port
        write_config "$name" "$port"
        redis-server "$TMP_ROOT/$name.conf" >>"$TMP_ROOT/$name.out" 2>&1 &
        PIDS[$name]=$!
        local i
        for i in $(seq 1 100); do
            if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
                break
            fi
            # shellcheck disable=SC2046
            if [[ "$(redis-cli --no-auth-warning $(cli_args "$name") ping 2>/dev/null)" == "PONG" ]]; then
                return 0
            fi
            sleep 0.05
        done
        kill -KILL "${PIDS[$name]}" 2>/dev/null || true
        wait "${PIDS[$name]}" 2>/dev/null || true
        unset "PIDS[$name]"
        log "$name did not start on port $port (attempt $attempt):"
        tail -n 5 "$TMP_ROOT/$name.log" "$TMP_ROOT/$name.out" >&2 2>/dev/null || true
    done
    log "giving up on $name"
    exit 1
}

# Redis Cluster: 6 nodes on loopback, every node with requirepass (the default
# user's password) and an ACL user; replicas authenticate with masterauth.
# A node's configuration is $TMP_ROOT/<name>/<port>.conf (a spec may stop a node
# and start it again with `redis-server <conf> --daemonize yes`: its pid file
# lets the cleanup find it).
#   start_cluster NAME TLS    (TLS 1: TLS-only nodes; sets CLUSTER_PORTS)
# With tls-cluster the bus always asks the connecting node for a certificate
# (whatever tls-auth-clients says) and a node presents tls-client-cert-file, by
# default its server certificate, whose serverAuth-only usage the peer refuses:
# `--cluster create` then waits forever for the nodes to meet. Hence the test
# client certificate (clientAuth, same CA) as the nodes' client certificate.
CLUSTER_PASSWORD="cluster-$RANDOM$RANDOM-secret"
CLUSTER_PORTS=()
CLUSTER_TLS=0
# redis-cli arguments reaching cluster node $1 (over TLS when CLUSTER_TLS is 1).
cluster_cli_args() {
    if [[ $CLUSTER_TLS -eq 1 ]]; then
        echo "--no-auth-warning -a $CLUSTER_PASSWORD --tls --cacert $CERTS/ca.crt -p $1"
    else
        echo "--no-auth-warning -a $CLUSTER_PASSWORD -p $1"
    fi
}
# Redis 6.0 has no tls-client-cert-file: a node presents its server certificate on the
# bus too, there one for both usages (node.crt, made for 6.0 only).
cluster_tls_certs() {
    if [[ $SERVER_VERSION -ge 602 ]]; then
        echo "tls-cert-file $CERTS/server.crt"
        echo "tls-key-file $CERTS/server.key"
        echo "tls-client-cert-file $CERTS/client.crt"
        echo "tls-client-key-file $CERTS/client.key"
    else
        echo "tls-cert-file $CERTS/node.crt"
        echo "tls-key-file $CERTS/node.key"
    fi
}
start_cluster() {
    local name=$1 dir="$TMP_ROOT/$1" i port attempt
    CLUSTER_TLS=$2
    CLUSTER_PORTS=()
    mkdir -p "$dir"
    for i in 1 2 3 4 5 6; do
        for attempt in 1 2 3 4 5; do
            # below the kernel's ephemeral range (32768+), bus port (port + 10000) included
            while :; do
                port=$(( 20000 + (RANDOM % 2700) ))
                [[ "$USED_PORTS" == *" $port "* || "$USED_PORTS" == *" $((port + 10000)) "* ]] && continue
                port_in_use "$port" || port_in_use $((port + 10000)) || break
            done
            USED_PORTS+="$port $((port + 10000)) "
            mkdir -p "$dir/$port.data"
            cat >"$dir/$port.conf" <<EOF
bind 127.0.0.1
protected-mode no
daemonize no
pidfile $dir/$port.pid
dir $dir/$port.data
logfile $dir/$port.log
save ""
appendonly no
$(debug_directive)
cluster-enabled yes
cluster-config-file $dir/$port.data/nodes.conf
cluster-node-timeout 2000
cluster-replica-validity-factor 0
repl-diskless-sync yes
repl-diskless-sync-delay 0
requirepass $CLUSTER_PASSWORD
masterauth $CLUSTER_PASSWORD
user app on >$ACL_PASSWORD ~*$(acl_channels) +@all
EOF
            if [[ $CLUSTER_TLS -eq 1 ]]; then
                cat >>"$dir/$port.conf" <<EOF
port 0
tls-port $port
tls-cluster yes
tls-replication yes
$(cluster_tls_certs)
tls-ca-cert-file $CERTS/ca.crt
tls-auth-clients no
EOF
            else
                echo "port $port" >>"$dir/$port.conf"
            fi
            redis-server "$dir/$port.conf" >>"$dir/$port.out" 2>&1 &
            PIDS["$name$i"]=$!
            local up=0 n
            for n in $(seq 1 100); do
                kill -0 "${PIDS[$name$i]}" 2>/dev/null || break
                # shellcheck disable=SC2046
                if [[ "$(redis-cli $(cluster_cli_args "$port") ping 2>/dev/null)" == "PONG" ]]; then
                    up=1
                    break
                fi
                sleep 0.05
            done
            if [[ $up -eq 1 ]]; then
                CLUSTER_PORTS+=("$port")
                break
            fi
            kill -KILL "${PIDS[$name$i]}" 2>/dev/null || true
            wait "${PIDS[$name$i]}" 2>/dev/null || true
            unset "PIDS[$name$i]"
            rm -f "$dir/$port.conf"
            log "$name node on port $port did not start (attempt $attempt)"
            [[ $attempt -eq 5 ]] && { log "giving up on $name"; exit 1; }
        done
    done
    if [[ "$name" == cluster && "${WITH_SERVERS_CLUSTER_BACKGROUND:-0}" == 1 ]]; then
        ( (create_cluster "$name") && echo ready >"$dir/ready.tmp" || echo failed >"$dir/ready.tmp"
          mv "$dir/ready.tmp" "$dir/ready" ) &
        PIDS[cluster_create]=$!
    else
        create_cluster "$name"
    fi
}
# Makes the running nodes of cluster NAME one cluster and waits until every node sees it ok.
create_cluster() {
    local name=$1 dir="$TMP_ROOT/$1" i port
    local all=""
    for port in "${CLUSTER_PORTS[@]}"; do all+=" 127.0.0.1:$port"; done
    # shellcheck disable=SC2046,SC2086
    timeout 60 redis-cli $(cluster_cli_args "${CLUSTER_PORTS[0]}") --cluster create $all \
        --cluster-replicas 1 --cluster-yes >"$dir/create.out" 2>&1 || {
        log "$name create failed:"; tail -n 20 "$dir/create.out" >&2; exit 1; }
    # writable everywhere: every node sees cluster_state ok
    for i in $(seq 1 200); do
        local ok=1
        for port in "${CLUSTER_PORTS[@]}"; do
            # shellcheck disable=SC2046
            redis-cli $(cluster_cli_args "$port") cluster info 2>/dev/null |
                grep -q '^cluster_state:ok' || { ok=0; break; }
        done
        [[ $ok -eq 1 ]] && return 0
        sleep 0.05
    done
    log "$name did not reach cluster_state:ok"
    exit 1
}

if [[ $need_tls -eq 1 ]]; then
    command -v openssl >/dev/null || { log "openssl not found (make deps)"; exit 2; }
    make_certs
fi

for s in $servers; do
    case "$s" in
        cluster) start_cluster cluster 0; PORTS[cluster]="$(IFS=,; echo "${CLUSTER_PORTS[*]}")" ;;
        cluster_tls) start_cluster cluster_tls 1; PORTS[cluster_tls]="$(IFS=,; echo "${CLUSTER_PORTS[*]}")" ;;
        *) start_server "$s" ;;
    esac
done

export HIREDIS_TEST_HOST=127.0.0.1
export HIREDIS_TEST_TMP="$TMP_ROOT"
for s in $servers; do
    case "$s" in
        plain)
            export HIREDIS_TEST_PORT="${PORTS[plain]}"
            export HIREDIS_TEST_SOCKET="$TMP_ROOT/plain.sock"
            if [[ "$(redis-cli -h ::1 -p "${PORTS[plain]}" ping 2>/dev/null)" == "PONG" ]]; then
                export HIREDIS_TEST_IPV6=1
            fi
            ;;
        pass)
            export HIREDIS_TEST_PASS_PORT="${PORTS[pass]}"
            export HIREDIS_TEST_PASSWORD="$PASSWORD"
            ;;
        acl)
            export HIREDIS_TEST_ACL_PORT="${PORTS[acl]}"
            export HIREDIS_TEST_ACL_USER="$ACL_USER"
            export HIREDIS_TEST_ACL_PASSWORD="$ACL_PASSWORD"
            export HIREDIS_TEST_ACL_DEFAULT_PASSWORD="$ACL_DEFAULT_PASSWORD"
            ;;
        tls) export HIREDIS_TEST_TLS_PORT="${PORTS[tls]}" ;;
        tls_client) export HIREDIS_TEST_TLS_CLIENT_PORT="${PORTS[tls_client]}" ;;
        tls_self) export HIREDIS_TEST_TLS_SELF_PORT="${PORTS[tls_self]}" ;;
        tls_other) export HIREDIS_TEST_TLS_OTHER_PORT="${PORTS[tls_other]}" ;;
        cluster)
            export HIREDIS_TEST_CLUSTER_PORTS="${PORTS[cluster]}"
            export HIREDIS_TEST_CLUSTER_PASSWORD="$CLUSTER_PASSWORD"
            export HIREDIS_TEST_CLUSTER_DIR="$TMP_ROOT/cluster"
            export HIREDIS_TEST_CLUSTER_ACL_USER="$ACL_USER"
            export HIREDIS_TEST_CLUSTER_ACL_PASSWORD="$ACL_PASSWORD"
            if [[ "${WITH_SERVERS_CLUSTER_BACKGROUND:-0}" == 1 ]]; then
                export HIREDIS_TEST_CLUSTER_READY="$TMP_ROOT/cluster/ready"
            fi
            ;;
        cluster_tls)
            # the same password and ACL user as the plain cluster
            export HIREDIS_TEST_CLUSTER_TLS_PORTS="${PORTS[cluster_tls]}"
            export HIREDIS_TEST_CLUSTER_PASSWORD="$CLUSTER_PASSWORD"
            export HIREDIS_TEST_CLUSTER_TLS_DIR="$TMP_ROOT/cluster_tls"
            ;;
    esac
done
if [[ $need_tls -eq 1 ]]; then
    export HIREDIS_TEST_CERTS="$CERTS"
fi

summary=""
for s in $servers; do summary+=" $s=${PORTS[$s]}"; done
log "redis-server ready:$summary${HIREDIS_TEST_IPV6:+ (ipv6)}"

# CMD runs in the background (with our stdin) so that a TERM/INT sent to this
# script is handled at once: cleanup stops CMD, then the servers.
exec 3<&0
"$@" <&3 3<&- &
CMD_PID=$!
set +e
wait "$CMD_PID"
status=$?
CMD_PID=""
set -e
exit "$status"
