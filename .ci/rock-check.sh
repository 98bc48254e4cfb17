#!/usr/bin/env bash
# make rock-check: the rock as a user gets it. Packs a src rock from the working tree,
# installs it from a directory outside the repository into a fresh tree, loads both
# modules with only that tree on the paths, and checks that the installed module
# exports nothing but luaopen_resty_session_hiredis_core.
#
# The real rockspec's source is the release archive, which `luarocks pack` would
# download; here a temporary copy of the rockspec points at an archive of the working
# tree (tracked and new files, not ignored ones) laid out like the release archive.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
luajit="${LUAJIT:-luajit}"
luarocks=(luarocks --lua-version 5.1)

rockspecs=(lua-resty-session-hiredis-*.rockspec)
[[ ${#rockspecs[@]} == 1 && -f "${rockspecs[0]}" ]] || { echo "rock-check: want exactly one rockspec" >&2; exit 1; }
rockspec="${rockspecs[0]}"
package="lua-resty-session-hiredis"
version="${rockspec#"$package"-}"
version="${version%.rockspec}"  # 0.1.0-1
dir="$package-${version%-*}"    # as in the release archive

work="$(mktemp -d "${TMPDIR:-/tmp}/rsh-rock.XXXXXX")"
trap '[[ -n "${ROCK_CHECK_KEEP:-}" ]] || rm -rf "$work"' EXIT
mkdir -p "$work/archive/$dir" "$work/pack" "$work/elsewhere"

git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$work/archive/$dir"
tar -czf "$work/$dir.tar.gz" -C "$work/archive" "$dir"

cp "$rockspec" "$work/pack/"
printf '\n-- rock-check: the working tree instead of the release archive\nsource = { url = "file://%s", dir = "%s" }\n' \
    "$work/$dir.tar.gz" "$dir" >>"$work/pack/$rockspec"

log="$work/luarocks.log"
run() { "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "rock-check: failed: $*" >&2; exit 1; }; }
(cd "$work/pack" && run "${luarocks[@]}" pack "$rockspec")
rock="$work/pack/$package-$version.src.rock"
[[ -f "$rock" ]] || { echo "rock-check: luarocks pack made no $rock" >&2; exit 1; }
echo "rock-check: packed $(basename "$rock") ($(stat -c %s "$rock") bytes)"

tree="$work/tree"
(cd "$work/elsewhere" && run "${luarocks[@]}" --tree "$tree" install "$rock")
# CMake's own line: the hiredis that luarocks found and passed (HIREDIS_INCDIR).
echo "rock-check: built against $(grep -m1 -o 'hiredis [0-9.]*: .*' "$log")"
"${luarocks[@]}" --tree "$tree" list --porcelain | grep -q "^$package	$version	installed" ||
    { echo "rock-check: $package $version not installed in the fresh tree" >&2; exit 1; }

so="$tree/lib/lua/5.1/resty/session/hiredis/core.so"
exports="$(nm -D --defined-only "$so" | awk '{ print $NF }')"
if [[ "$exports" != "luaopen_resty_session_hiredis_core" ]]; then
    echo "rock-check: core.so exports more than luaopen_resty_session_hiredis_core:" >&2
    echo "$exports" >&2
    exit 1
fi
echo "rock-check: core.so exports only luaopen_resty_session_hiredis_core"

share="$tree/share/lua/5.1"
(cd "$work/elsewhere" &&
    ROCK_TREE="$tree" LUA_PATH="$share/?.lua;$share/?/init.lua" LUA_CPATH="$tree/lib/lua/5.1/?.so" "$luajit" -e '
    local tree = assert(os.getenv("ROCK_TREE"))
    local hiredis = require "resty.session.hiredis"
    for _, name in ipairs({ "resty.session.hiredis", "resty.session.hiredis.cosocket" }) do
      local file = assert(package.searchpath(name, package.path))
      assert(file:sub(1, #tree) == tree, name .. " loaded from outside the tree: " .. file)
    end
    local core_file = assert(package.searchpath("resty.session.hiredis.core", package.cpath))
    assert(core_file:sub(1, #tree) == tree, "core loaded from outside the tree: " .. core_file)
    local storage = hiredis.new({ prefix = "sessions", port = 6380 })
    assert(storage.prefix == "sessions" and storage.port == 6380)
    print("rock-check: loaded resty.session.hiredis " .. hiredis._VERSION .. " and its core from the fresh tree")
  ') || { echo "rock-check: loading from the fresh tree failed" >&2; exit 1; }
