// luaopen_resty_session_hiredis_core: the instance and operation types.
#include <cstring>
#include <string>

#include "errors.hpp"
#include "lua_config.hpp"
#include "lua_operation.hpp"
#include "lua_util.hpp"
#include "session_client.hpp"
#include "session_state.hpp"

namespace rsh {
namespace {

constexpr const char* kInstanceType = "resty.session.hiredis.core.instance";
constexpr const char* kOperationType = "resty.session.hiredis.core.operation";
constexpr const char* kVersion = "0.1.0";

struct Instance {
    explicit Instance(Config c) : config(std::move(c)), pool_name(config.pool_name()) {}
    Config config;
    std::string pool_name;  // derived from config: computed at new() and on each field write, not per call
    KeyNaming naming() const { return KeyNaming{config.prefix, config.suffix}; }
};

Instance* check_instance(lua_State* L) {
    return static_cast<Instance*>(luaL_checkudata(L, 1, kInstanceType));
}

Operation* check_operation(lua_State* L) {
    return static_cast<Operation*>(luaL_checkudata(L, 1, kOperationType));
}

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
    Instance* self = check_instance(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        Operation op = operation_from_lua(L, M, self->naming(), 2);
        return push_result(L, execute(self->config, self->pool_name, op));
    });
}

// --- instance: what the cosocket driver needs ------------------------------

int instance_prepare(lua_State* L) {
    Instance* self = check_instance(L);
    const char* name = luaL_checkstring(L, 2);
    Method method;
    if (std::strcmp(name, "set") == 0) method = Method::Set;
    else if (std::strcmp(name, "get") == 0) method = Method::Get;
    else if (std::strcmp(name, "delete") == 0) method = Method::Delete;
    else if (std::strcmp(name, "read_metadata") == 0) method = Method::ReadMetadata;
    else return luaL_argerror(L, 2, "unknown method");
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        Operation* op = push_object<Operation>(L, kOperationType, operation_from_lua(L, method, self->naming(), 3));
        op->set_reader_limits(self->config.reader_limits());
        return 1;
    });
}

int instance_prepare_handshake(lua_State* L) {
    Instance* self = check_instance(L);
    const bool fresh = lua_toboolean(L, 2) != 0;
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const Config& c = self->config;
        const HandshakeArgs args = handshake_args(c, fresh ? SessionState{} : SessionState::pooled_for(c));
        auto op = Operation::handshake(args);
        if (!op) {
            lua_pushnil(L);
            return 1;
        }
        push_object<Operation>(L, kOperationType, std::move(*op))->set_reader_limits(c.reader_limits());
        return 1;
    });
}

int instance_pool_name(lua_State* L) {
    Instance* self = check_instance(L);
    lua_pushlstring(L, self->pool_name.data(), self->pool_name.size());
    return 1;
}

int instance_cosocket_target(lua_State* L) {
    Instance* self = check_instance(L);
    const Config& c = self->config;
    if (c.socket) {
        const std::string target = "unix:" + normalize_socket_path(*c.socket);
        lua_pushlstring(L, target.data(), target.size());
        return 1;
    }
    lua_pushlstring(L, c.host.data(), c.host.size());
    lua_pushinteger(L, c.port);
    return 2;
}

const luaL_Reg kInstanceMethods[] = {
    {"set", native_call<Method::Set>},
    {"get", native_call<Method::Get>},
    {"delete", native_call<Method::Delete>},
    {"read_metadata", native_call<Method::ReadMetadata>},
    {"prepare", instance_prepare},
    {"prepare_handshake", instance_prepare_handshake},
    {"pool_name", instance_pool_name},
    {"cosocket_target", instance_cosocket_target},
    {nullptr, nullptr},
};

// Methods first, then configuration fields.
int instance_index(lua_State* L) {
    Instance* self = check_instance(L);
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
    Instance* self = check_instance(L);
    const char* field = luaL_checkstring(L, 2);
    return lua_barrier(L, OnError::Raise, [&] {
        Config updated = self->config;
        set_config_field(L, updated, field, 3);
        std::string pool_name = updated.pool_name();
        self->config = std::move(updated);
        self->pool_name = std::move(pool_name);
        return 0;
    });
}

int instance_tostring(lua_State* L) {
    check_instance(L);
    lua_pushfstring(L, "%s: %p", kInstanceType, lua_touserdata(L, 1));
    return 1;
}

// --- operation ---------------------------------------------------------------

int operation_request(lua_State* L) {
    Operation* op = check_operation(L);
    const long version = static_cast<long>(luaL_optnumber(L, 2, 0));
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        auto request = op->next_request(version);
        if (request) lua_pushlstring(L, request->data(), request->size()); else lua_pushnil(L);
        return 1;
    });
}

int operation_feed(lua_State* L) {
    Operation* op = check_operation(L);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 2, &len);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        lua_pushboolean(L, op->feed(data, len));
        return 1;
    });
}

int operation_result(lua_State* L) {
    Operation* op = check_operation(L);
    if (!op->finished()) {
        lua_pushnil(L);
        lua_pushliteral(L, "operation not finished");
        return 2;
    }
    return lua_barrier(L, OnError::ReturnNilErr, [&] { return push_result(L, op->result()); });
}

const luaL_Reg kOperationMethods[] = {
    {"request", operation_request},
    {"feed", operation_feed},
    {"result", operation_result},
    {nullptr, nullptr},
};

void register_types(lua_State* L) {
    luaL_newmetatable(L, kInstanceType);
    lua_newtable(L);
    luaL_register(L, nullptr, kInstanceMethods);
    lua_pushcclosure(L, instance_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, instance_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, gc_object<Instance>);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, instance_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, kOperationType);
    lua_newtable(L);
    luaL_register(L, nullptr, kOperationMethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc_object<Operation>);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

}  // namespace
}  // namespace rsh

extern "C" __attribute__((visibility("default"))) int luaopen_resty_session_hiredis_core(lua_State* L) {
    rsh::register_types(L);
    lua_newtable(L);
    lua_pushcfunction(L, rsh::instance_new);
    lua_setfield(L, -2, "new");
    lua_pushstring(L, rsh::kVersion);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
