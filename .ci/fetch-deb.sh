#!/usr/bin/env bash
# Fetches packages of another Debian release with apt's own tools and unpacks them into a
# private prefix. Nothing on the system changes: apt runs with its own state, cache, lock
# and sources under DIR (an empty status file), and the packages are only unpacked
# (dpkg-deb -x), never installed.
#
#   .ci/fetch-deb.sh [--deps REGEX] DIR FROM_SUITE TO_SUITE PACKAGE...
#
# The sources entry is this machine's own apt entry for FROM_SUITE with the suite renamed
# to TO_SUITE (same mirror, same components), read through `apt-get indextargets`.
# --deps REGEX: also the packages the named ones depend on directly whose names match
# REGEX (e.g. '^libhiredis[0-9]': the library package of libhiredis-dev, whatever its
# soname). Only what is named (or matched) is fetched: list the libraries a binary needs.
#
# Prints the prefix (DIR/root). Re-running with the same arguments and the prefix present
# does nothing; other arguments fetch again from scratch.
#   make hiredis1: .ci/fetch-deb.sh --deps '^libhiredis[0-9]' build-hiredis1/deps bookworm trixie libhiredis-dev
#   make servers:  one call per release (Makefile, SERVERS_*_DEBS)
set -euo pipefail

me="fetch-deb"
deps=""
if [[ "${1:-}" == --deps ]]; then
    deps="${2:?--deps needs a regular expression}"
    shift 2
fi
if [[ $# -lt 4 ]]; then
    echo "usage: $0 [--deps REGEX] DIR FROM_SUITE TO_SUITE PACKAGE..." >&2
    exit 2
fi
dir="$1" from="$2" to="$3"
shift 3
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
root="$dir/root"
request="$from $to deps=$deps $*"
if [[ -f "$root/.complete" && "$(cat "$root/.complete")" == "$request" ]]; then
    echo "$root"
    exit 0
fi

state="$dir/apt"
rm -rf "$state" "$root" "$dir/debs"
mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/sources.list.d" \
    "$state/preferences.d" "$dir/debs" "$root"

# shellcheck disable=SC2016
apt-get indextargets --format '$(REPO_URI) $(COMPONENT)' 'Identifier: Packages' "Release: $from" |
    sort -u | awk -v suite="$to" '{ print "deb " $1 " " suite " " $2 }' >"$state/sources.list"
if [[ ! -s "$state/sources.list" ]]; then
    echo "$me: no apt source for suite '$from' on this machine" >&2
    exit 1
fi

apt_opts=(
    -o "Dir::State=$state" -o "Dir::State::Lists=$state/lists" -o "Dir::State::status=/dev/null"
    -o "Dir::Cache=$state" -o "Dir::Cache::archives=$state/archives"
    -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=$state/sources.list.d"
    -o "Dir::Etc::Preferences=$state/preferences" -o "Dir::Etc::PreferencesParts=$state/preferences.d"
    -o "Acquire::Languages=none"
)
# As root apt downloads as _apt, which may not write here: keep the current user.
[[ "$(id -u)" == 0 ]] && apt_opts+=(-o "APT::Sandbox::User=root")

echo "$me: $(cat "$state/sources.list")" >&2
apt-get "${apt_opts[@]}" -qq update >&2
packages=("$@")
if [[ -n "$deps" ]]; then
    # shellcheck disable=SC2207
    packages+=($(apt-cache "${apt_opts[@]}" depends "$@" |
        awk -v re="$deps" '$1 == "Depends:" && $2 ~ re { print $2 }' | sort -u))
fi
echo "$me: ${packages[*]}" >&2
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}" >&2)
for deb in "$dir"/debs/*.deb; do
    echo "$me: unpacking $(basename "$deb")" >&2
    dpkg-deb -x "$deb" "$root"
done
echo "$request" >"$root/.complete"
echo "$root"
