// What the cosocket driver (lua/resty/session/hiredis/cosocket.lua) needs from
// the core, apart from the user's API: reusable operations that turn a call's
// arguments into request bytes and reply bytes into the call's results, in two
// crossings in the common case.
#pragma once

#include <lua.hpp>

namespace rsh {

// Instance methods for the driver (pool_name, cosocket_target, prepare_handshake).
extern const luaL_Reg kDriverInstanceMethods[];
// Registers the operation type; sets `operation` (its constructor) in the table on top.
void register_driver(lua_State* L);

}  // namespace rsh
