#!/usr/bin/env bash
# Runs spec files RUNS times, each file of each run under fresh servers
# (with-servers.sh, plus with-sentinels.sh for the sentinel specs), and prints
# how many runs of each file passed (make stress).
#
#   spec/support/stress.sh RUNS FILE...
#
# A FILE may be several joined by "+" (a+b): they run in that order in one busted
# under the same servers, as make spec runs them one after the other (a spec that
# follows a failover must find the topology it needs).
#
# LUAJIT, BUSTED: the interpreter and busted (as for make spec). STRESS_LOG_DIR
# (default build/stress): the output of every failed run is kept there. Exits 1
# when a run of any file failed.
set -uo pipefail

if [[ $# -lt 2 ]] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 RUNS FILE..." >&2
    exit 2
fi
runs=$1
shift
LUAJIT=${LUAJIT:-luajit}
BUSTED=${BUSTED:-/usr/bin/busted}
log_dir=${STRESS_LOG_DIR:-build/stress}
mkdir -p "$log_dir"
here="$(dirname "$0")"

# The servers a spec file needs, as with-servers.sh arguments (and the sentinel group):
# the cluster specs start only their cluster; any other spec gets every server, as
# under make spec (its auth, ACL and TLS cases need them).
servers_for() {
    case "$1" in
        *sentinel*) echo "--only plain $here/with-sentinels.sh" ;;
        spec/cluster/*tls*) echo "--only plain,tls,cluster_tls" ;;
        spec/cluster/*) echo "--only plain,cluster" ;;
        *) echo "" ;;
    esac
}

declare -A passed=()
started=$(date +%s)
for ((i = 1; i <= runs; i++)); do
    for f in "$@"; do
        log="$log_dir/$(echo "${f//.lua/}" | tr /+ _-)-run$i.log"
        t0=$(date +%s)
        # shellcheck disable=SC2046,SC2086
        if "$here/with-servers.sh" $(servers_for "$f") "$LUAJIT" "$BUSTED" ${f//+/ } >"$log" 2>&1; then
            passed[$f]=$(( ${passed[$f]:-0} + 1 ))
            rm -f "$log"
            echo "stress: run $i/$runs $f: passed ($(( $(date +%s) - t0 )) s)"
        else
            echo "stress: run $i/$runs $f: FAILED ($(( $(date +%s) - t0 )) s), output in $log"
            grep -A6 -E '^(Failure|Error) ->' "$log" | head -40 | sed 's/^/    /'
        fi
    done
done

status=0
echo "stress: $runs runs in $(( $(date +%s) - started )) s; passed runs per spec file:"
for f in "$@"; do
    echo "$f: ${passed[$f]:-0}/$runs"
    [[ ${passed[$f]:-0} -eq $runs ]] || status=1
done
exit $status
