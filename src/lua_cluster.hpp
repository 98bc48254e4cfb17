// The Redis Cluster instance type of the core (resty.session.hiredis.cluster's
// engine): its configuration from Lua, the storage methods over the native
// transport, and what the cosocket driver needs.
#pragma once

#include <lua.hpp>

#include "cluster_client.hpp"
#include "cluster_operation.hpp"
#include "keys.hpp"
#include "operation.hpp"

namespace rsh {

constexpr const char* kClusterType = "resty.session.hiredis.core.cluster";
constexpr const char* kClusterOperationType = "resty.session.hiredis.core.cluster_operation";

struct ClusterInstance {
    explicit ClusterInstance(ClusterConfig c)
        : naming{c.base.prefix, c.base.suffix}, client(std::move(c)) {}

    KeyNaming naming;
    ClusterClient client;
    Operation loader;         // validates and holds a native call's arguments
    ClusterOperation native;  // the native call in progress
};

inline ClusterInstance* check_cluster(lua_State* L, int idx) {
    return static_cast<ClusterInstance*>(luaL_checkudata(L, idx, kClusterType));
}

// Sets `cluster_new` and `key_slot` in the table on top.
void register_cluster(lua_State* L);

}  // namespace rsh
