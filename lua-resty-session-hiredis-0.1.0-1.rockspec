rockspec_format = "3.0"
package = "lua-resty-session-hiredis"
version = "0.1.0-1"
source = {
  url = "git+file://.",
  tag = "v0.1.0",
}
description = {
  summary = "Native (C++/hiredis) Redis storage for lua-resty-session, drop-in for resty.session.redis",
  detailed = [[
    resty.session.hiredis stores lua-resty-session v4 sessions in Redis with the same keys,
    values, TTLs and metadata sorted sets as resty.session.redis. A C++17 core (hiredis as RESP
    codec, OpenSSL for TLS) builds commands and parses replies; inside OpenResty the I/O goes
    through cosockets, elsewhere through the core's own pooled transport.
  ]],
  license = "BSD-2-Clause",
}
dependencies = {
  "lua >= 5.1, < 5.2",
}
external_dependencies = {
  HIREDIS = { header = "hiredis/hiredis.h" },
  OPENSSL = { header = "openssl/ssl.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
}
