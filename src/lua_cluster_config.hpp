// Reading a Redis Cluster configuration (upstream's resty.session.redis.cluster
// field names) from Lua. Kept apart from lua_config: the single-node fields
// are read by lua_config itself, from a copy that holds only them.
#pragma once

#include <lua.hpp>

#include "cluster_config.hpp"

namespace rsh {

// Reads the table at idx; throws ArgumentError("invalid <field>: <why>").
ClusterConfig read_cluster_config(lua_State* L, int idx);

}  // namespace rsh
