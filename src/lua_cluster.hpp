// The Redis Cluster instance type of the core (resty.session.hiredis.cluster's
// engine): its configuration from Lua, the storage methods over the native
// transport, and what the cosocket driver needs.
#pragma once

#include <lua.hpp>

namespace rsh {

// Sets `cluster_new` and `key_slot` in the table on top.
void register_cluster(lua_State* L);

}  // namespace rsh
