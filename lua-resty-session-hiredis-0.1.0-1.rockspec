rockspec_format = "3.0"
package = "lua-resty-session-hiredis"
version = "0.1.0-1"
-- The release archive of tag v0.1.0. `make rock-check` packs a src rock from the
-- working tree with a temporary copy of this file whose source points there.
source = {
  url = "https://github.com/rsh-project/lua-resty-session-hiredis/archive/refs/tags/v0.1.0.tar.gz",
  dir = "lua-resty-session-hiredis-0.1.0",
}
description = {
  summary = "Native (C++/hiredis) Redis storage for lua-resty-session, drop-in for resty.session.redis",
  detailed = [[
    resty.session.hiredis stores lua-resty-session v4 sessions in Redis with the same keys,
    values, TTLs and metadata sorted sets as resty.session.redis. A C++17 core (hiredis 0.14
    or 1.x as RESP codec, OpenSSL for TLS) builds commands and parses replies; inside OpenResty
    the I/O goes through cosockets, elsewhere through the core's own pooled transport.
  ]],
  homepage = "https://github.com/rsh-project/lua-resty-session-hiredis",
  issues_url = "https://github.com/rsh-project/lua-resty-session-hiredis/issues",
  license = "BSD-2-Clause",
  labels = { "openresty", "session", "redis", "hiredis" },
}
dependencies = {
  "lua >= 5.1, < 5.2",
}
-- luarocks finds them (or takes HIREDIS_DIR=..., OPENSSL_DIR=... on its command line)
-- and passes the directories to CMake below.
external_dependencies = {
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    HIREDIS_DIR = "$(HIREDIS_DIR)",
    HIREDIS_INCDIR = "$(HIREDIS_INCDIR)",
    HIREDIS_LIBDIR = "$(HIREDIS_LIBDIR)",
    OPENSSL_DIR = "$(OPENSSL_DIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)",
    OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
  },
}
