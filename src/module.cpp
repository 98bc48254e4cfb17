// luaopen_resty_session_hiredis_core: the instance type (configuration fields,
// the storage methods over the native transport) and the driver's entry points.
#include "errors.hpp"
#include "lua_cluster.hpp"
#include "lua_config.hpp"
#include "lua_driver.hpp"
#include "lua_instance.hpp"
#include "lua_operation.hpp"
#include "lua_sentinel.hpp"
#include "lua_stats.hpp"
#include "lua_util.hpp"
#include "session_client.hpp"

namespace rsh {
namespace {

constexpr const char* kVersion = "0.1.0";

// --- module functions ------------------------------------------------------

int instance_new(lua_State* L) {
    lua_settop(L, 1);
    return lua_barrier(L, OnError::Raise, [&] {
        push_object<Instance>(L, kInstanceType, read_config(L, 1));
        return 1;
    });
}

// --- instance: storage methods over the native transport -------------------

template <Method M>
int native_call(lua_State* L) {
    Instance* self = check_instance(L, 1);
    stats::CallMeter meter;
    if (self->metered) meter.start(static_cast<std::size_t>(M) - 1);
    return finish_meter(L, meter, lua_barrier(L, OnError::ReturnNilErr, [&] {
        Operation& op = self->native_op;
        const TrimOnExit trim(op);
        load_operation(L, op, M, self->naming, 2, self->config.reader_limits().max_reply_bytes);
        const Result result = execute(self->config, self->pool_name, op);
        return protected_push(L, [&](lua_State* state) { return push_result(state, result); });
    }));
}

// inst:fields() -> a plain table of every configuration field (the Lua
// module's mirror: reading a table field costs nothing, a C call per field does).
int instance_fields(lua_State* L) {
    Instance* self = check_instance(L, 1);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        push_config_table(L, self->config);
        return 1;
    });
}

const luaL_Reg kStorageMethods[] = {
    {"set", native_call<Method::Set>},
    {"get", native_call<Method::Get>},
    {"delete", native_call<Method::Delete>},
    {"read_metadata", native_call<Method::ReadMetadata>},
    {nullptr, nullptr},
};

// Methods first, then configuration fields.
int instance_index(lua_State* L) {
    Instance* self = check_instance(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING || !push_config_field(L, self->config, lua_tostring(L, 2))) {
        lua_pushnil(L);
    }
    return 1;
}

// Writes are validated like new(); a change applies to the next call.
int instance_newindex(lua_State* L) {
    Instance* self = check_instance(L, 1);
    const char* field = luaL_checkstring(L, 2);
    return lua_barrier(L, OnError::Raise, [&] {
        Config updated = self->config;
        set_config_field(L, updated, field, 3);
        self->configure(std::move(updated));
        return 0;
    });
}

int instance_tostring(lua_State* L) {
    check_instance(L, 1);
    lua_pushfstring(L, "%s: %p", kInstanceType, lua_touserdata(L, 1));
    return 1;
}

void register_instance(lua_State* L) {
    luaL_newmetatable(L, kInstanceType);
    lua_newtable(L);
    luaL_register(L, nullptr, kStorageMethods);
    lua_pushcfunction(L, instance_fields);
    lua_setfield(L, -2, "fields");
    luaL_register(L, nullptr, kDriverInstanceMethods);
    lua_pushcclosure(L, instance_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, instance_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, gc_object<Instance>);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, instance_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

}  // namespace
}  // namespace rsh

extern "C" __attribute__((visibility("default"))) int luaopen_resty_session_hiredis_core(lua_State* L) {
    rsh::register_protected_push(L);
    rsh::register_instance(L);
    lua_newtable(L);
    lua_pushcfunction(L, rsh::instance_new);
    lua_setfield(L, -2, "new");
    // The storage methods as plain functions, for the Lua module to call
    // without a lookup through the instance's __index.
    lua_newtable(L);
    luaL_register(L, nullptr, rsh::kStorageMethods);
    lua_setfield(L, -2, "native");
    rsh::register_driver(L);
    rsh::register_sentinel(L);
    rsh::register_cluster(L);
    rsh::register_stats(L);
    lua_pushstring(L, rsh::kVersion);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
