#!/usr/bin/env bash
# Fetches another Debian release's hiredis (libhiredis-dev and the library package it
# depends on) with apt's own tools and unpacks it into a private prefix. Nothing on the
# system changes: apt runs with its own state, cache, lock and sources under DIR (an
# empty status file), and the packages are only unpacked (dpkg-deb -x), never installed.
#
#   .ci/fetch-hiredis-deb.sh DIR [FROM_SUITE] [TO_SUITE]     (default: bookworm trixie)
#
# The sources entry is this machine's own apt entry for FROM_SUITE with the suite renamed
# to TO_SUITE (same mirror, same components), read through `apt-get indextargets`.
# Prints the prefix (DIR/root); its headers are under usr/include, the libraries under
# usr/lib/<multiarch>. Re-running with the prefix present does nothing.
set -euo pipefail

dir="${1:?usage: $0 DIR [FROM_SUITE] [TO_SUITE]}"
from="${2:-bookworm}"
to="${3:-trixie}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
root="$dir/root"
if [[ -f "$root/.complete" ]]; then
    echo "$root"
    exit 0
fi

state="$dir/apt"
rm -rf "$state" "$root"
mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/sources.list.d" \
    "$state/preferences.d" "$dir/debs" "$root"

apt-get indextargets --format '$(REPO_URI) $(COMPONENT)' 'Identifier: Packages' "Release: $from" |
    sort -u | awk -v suite="$to" '{ print "deb " $1 " " suite " " $2 }' >"$state/sources.list"
if [[ ! -s "$state/sources.list" ]]; then
    echo "fetch-hiredis-deb: no apt source for suite '$from' on this machine" >&2
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

echo "fetch-hiredis-deb: $(cat "$state/sources.list")" >&2
apt-get "${apt_opts[@]}" -qq update >&2
# libhiredis-dev and the versioned library package(s) it depends on.
packages=(libhiredis-dev $(apt-cache "${apt_opts[@]}" depends libhiredis-dev |
    awk '$1 == "Depends:" && $2 ~ /^libhiredis[0-9]/ { print $2 }'))
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}" >&2)
for deb in "$dir"/debs/*.deb; do
    echo "fetch-hiredis-deb: unpacking $(basename "$deb")" >&2
    dpkg-deb -x "$deb" "$root"
done
touch "$root/.complete"
echo "$root"
