# shellcheck shell=bash
# Sourced by with-servers.sh and with-sentinels.sh: the release of the redis-server on
# PATH and the configuration directives that depend on it. Redis 7.0 (Debian 12's, what
# make test runs) gets the directives the scripts always wrote; make servers runs them
# against Redis 6.0, 8.0 and Valkey 8.1 too (.ci/servers.sh).
#
# SERVER_VERSION: major * 100 + minor ("Redis server v=7.0.15": 700; "Valkey server
# v=8.1.1": 801, Valkey forked from Redis 7.2 and keeps its directives).
SERVER_VERSION=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p' |
    awk '{ print $1 * 100 + $2 }')
if [[ -z "$SERVER_VERSION" ]]; then
    echo "$(basename "$0"): cannot tell the version of redis-server: $(redis-server --version 2>&1)" >&2
    exit 2
fi

# Before 7.0 DEBUG is allowed by default and enable-debug-command is unknown.
debug_directive() {
    if [[ $SERVER_VERSION -ge 700 ]]; then echo "enable-debug-command yes"; fi
}
# Before 7.0 a bind address cannot be marked optional ("-::1"), but one the machine
# lacks is skipped anyway.
bind_directive() {
    if [[ $SERVER_VERSION -ge 700 ]]; then echo "bind 127.0.0.1 -::1"; else echo "bind 127.0.0.1 ::1"; fi
}
# ACL Pub/Sub channel rules (&*) came with 6.2; 6.0 lets every user use every channel.
acl_channels() {
    if [[ $SERVER_VERSION -ge 602 ]]; then echo " &*"; fi
}
