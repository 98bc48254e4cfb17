#include "lua_cluster.hpp"

#include "cluster_client.hpp"
#include "lua_cluster_config.hpp"
#include "lua_cluster_driver.hpp"
#include "lua_operation.hpp"
#include "lua_stats.hpp"
#include "lua_util.hpp"
#include "slots.hpp"

namespace rsh {
namespace {

int cluster_new(lua_State* L) {
    lua_settop(L, 1);
    return lua_barrier(L, OnError::Raise, [&] {
        push_object<ClusterInstance>(L, kClusterType, read_cluster_config(L, 1));
        return 1;
    });
}

template <Method M>
int native_call(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    stats::CallMeter meter;
    meter.start(static_cast<std::size_t>(M) - 1);
    return finish_meter(L, meter, lua_barrier(L, OnError::ReturnNilErr, [&] {
        const TrimOnExit trim_loader(self->loader);
        ClusterOperation& op = self->native;
        const TrimOnExit trim_op(op);
        load_operation(L, self->loader, M, self->naming, 2,
                       self->client.config().base.reader_limits().max_reply_bytes);
        op.start(self->loader, self->naming, self->client.topology(), self->client.policy());
        return push_result(L, self->client.execute(op));
    }));
}

// core.key_slot(key) -> the key's cluster slot (for the specs and the curious).
int key_slot_of(lua_State* L) {
    std::size_t len = 0;
    const char* key = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, key_slot(std::string_view(key, len)));
    return 1;
}

// inst:slot_owner(slot) -> "host:port" of the node the shared map says serves it (specs).
int cluster_slot_owner(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    const int slot = static_cast<int>(luaL_checkinteger(L, 2));
    const NodeAddress* node = self->client.topology()->map()->node_for(slot);
    if (!node) {
        lua_pushnil(L);
        return 1;
    }
    const std::string text = node->text();
    lua_pushlstring(L, text.data(), text.size());
    return 1;
}

// inst:topology_version() -> how many times this process's map changed (specs).
int cluster_topology_version(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    lua_pushnumber(L, static_cast<lua_Number>(self->client.topology()->version()));
    return 1;
}

const luaL_Reg kClusterMethods[] = {
    {"set", native_call<Method::Set>},
    {"get", native_call<Method::Get>},
    {"delete", native_call<Method::Delete>},
    {"read_metadata", native_call<Method::ReadMetadata>},
    {"slot_owner", cluster_slot_owner},
    {"topology_version", cluster_topology_version},
    {nullptr, nullptr},
};

}  // namespace

void register_cluster(lua_State* L) {
    luaL_newmetatable(L, kClusterType);
    lua_newtable(L);
    luaL_register(L, nullptr, kClusterMethods);
    luaL_register(L, nullptr, kClusterDriverMethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc_object<ClusterInstance>);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_pushcfunction(L, cluster_new);
    lua_setfield(L, -2, "cluster_new");
    lua_pushcfunction(L, key_slot_of);
    lua_setfield(L, -2, "key_slot");
    register_cluster_driver(L);
}

}  // namespace rsh
