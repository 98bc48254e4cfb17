// What the cosocket cluster driver (lua/resty/session/hiredis/cluster_driver.lua)
// needs from the core, apart from the user's API: the cluster operation as a
// userdata (slot groups, phases, batches, redirections), per-node single-node
// instances for the handshake and pool names, and the shared slot map's refresh.
#pragma once

#include <lua.hpp>

namespace rsh {

// Cluster instance methods for the driver.
extern const luaL_Reg kClusterDriverMethods[];
// Registers the cluster operation type; sets `cluster_operation` (its
// constructor) in the table on top.
void register_cluster_driver(lua_State* L);

}  // namespace rsh
