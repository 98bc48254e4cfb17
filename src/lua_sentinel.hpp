// What lua/resty/session/hiredis/sentinel.lua needs from the core: the
// sans-I/O sentinel query (for cosockets), the same query over the native
// transport, and sentinel pool names.
#pragma once

#include <lua.hpp>

namespace rsh {

// Sets sentinel_query, ask_sentinel and sentinel_pool_name in the table on top.
void register_sentinel(lua_State* L);

}  // namespace rsh
