// What lua/resty/session/hiredis/sentinel.lua needs from the core: the
// sans-I/O sentinel round (for cosockets), the same round over the native
// transport, sentinel pool names, and the data pool generations.
#pragma once

#include <lua.hpp>

namespace rsh {

// Sets sentinel_round, ask_sentinels, sentinel_pool_name, sentinel_generation
// and retire_pool in the table on top.
void register_sentinel(lua_State* L);

}  // namespace rsh
