#include "lua_sentinel.hpp"

#include <cstring>

#include "errors.hpp"
#include "lua_util.hpp"
#include "sentinel_client.hpp"

namespace rsh {
namespace {

constexpr const char* kSentinelQueryType = "resty.session.hiredis.core.sentinel_query";

std::optional<std::string> opt_string(lua_State* L, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING) return std::nullopt;
    return to_string(L, idx);
}

SentinelQuery::Ask ask_of(lua_State* L, int idx) {
    const char* ask = luaL_checkstring(L, idx);
    if (std::strcmp(ask, "master") == 0) return SentinelQuery::Ask::Master;
    if (std::strcmp(ask, "replicas") == 0) return SentinelQuery::Ask::Replicas;
    throw ArgumentError("invalid ask: must be \"master\" or \"replicas\"");
}

// host, port | { {host=, port=}... } | false (the sentinel does not know the
// master name) | nil, err
int push_answer(lua_State* L, const SentinelAnswer& answer) {
    switch (answer.kind) {
    case SentinelAnswer::Kind::Address:
        lua_pushlstring(L, answer.address.host.data(), answer.address.host.size());
        lua_pushinteger(L, answer.address.port);
        return 2;
    case SentinelAnswer::Kind::Replicas: {
        lua_createtable(L, static_cast<int>(answer.replicas.size()), 0);
        int i = 0;
        for (const auto& replica : answer.replicas) {
            lua_createtable(L, 0, 2);
            lua_pushlstring(L, replica.host.data(), replica.host.size());
            lua_setfield(L, -2, "host");
            lua_pushinteger(L, replica.port);
            lua_setfield(L, -2, "port");
            lua_rawseti(L, -2, ++i);
        }
        return 1;
    }
    case SentinelAnswer::Kind::UnknownMaster:
        lua_pushboolean(L, 0);
        return 1;
    case SentinelAnswer::Kind::Error:
        break;
    }
    lua_pushnil(L);
    lua_pushlstring(L, answer.error.data(), answer.error.size());
    return 2;
}

SentinelQuery* check_query(lua_State* L) {
    return static_cast<SentinelQuery*>(luaL_checkudata(L, 1, kSentinelQueryType));
}

// core.sentinel_query(ask, master_name, username, password, authenticate)
int query_new(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const SentinelQuery::Ask ask = ask_of(L, 1);
        push_object<SentinelQuery>(L, kSentinelQueryType, ask, to_string(L, 2), opt_string(L, 3),
                                   opt_string(L, 4), lua_toboolean(L, 5) != 0);
        return 1;
    });
}

int query_request(lua_State* L) {
    const std::string_view bytes = check_query(L)->request();
    lua_pushlstring(L, bytes.data(), bytes.size());
    return 1;
}

// q:feed(data) -> true once every reply is in | false | nil, "protocol error: ..."
int query_feed(lua_State* L) {
    SentinelQuery* query = check_query(L);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 2, &len);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        lua_pushboolean(L, query->feed(data, len));
        return 1;
    });
}

int query_answer(lua_State* L) {
    SentinelQuery* query = check_query(L);
    if (!query->finished()) {
        lua_pushnil(L);
        lua_pushliteral(L, "sentinel query not finished");
        return 2;
    }
    return lua_barrier(L, OnError::ReturnNilErr, [&] { return push_answer(L, query->answer()); });
}

double number_field(lua_State* L, int idx, const char* name) {
    lua_getfield(L, idx, name);
    const double value = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return value;
}

std::optional<std::string> string_field(lua_State* L, int idx, const char* name) {
    lua_getfield(L, idx, name);
    auto value = opt_string(L, -1);
    lua_pop(L, 1);
    return value;
}

// core.ask_sentinel(target, ask, master_name) over the native transport;
// target = { host, port, pool, username, password, force_auth, connect_timeout,
// send_timeout, read_timeout, keepalive_timeout, pool_size }.
int ask_native(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        SentinelTarget target;
        target.host = string_field(L, 1, "host").value_or("127.0.0.1");
        target.port = static_cast<int>(number_field(L, 1, "port"));
        target.pool_name = string_field(L, 1, "pool").value_or("");
        target.username = string_field(L, 1, "username");
        target.password = string_field(L, 1, "password");
        lua_getfield(L, 1, "force_auth");
        target.force_auth = lua_toboolean(L, -1) != 0;
        lua_pop(L, 1);
        target.connect_timeout = number_field(L, 1, "connect_timeout");
        target.send_timeout = number_field(L, 1, "send_timeout");
        target.read_timeout = number_field(L, 1, "read_timeout");
        target.keepalive_timeout = number_field(L, 1, "keepalive_timeout");
        target.pool_size = static_cast<int>(number_field(L, 1, "pool_size"));
        if (target.pool_size < 1) target.pool_size = 1;
        const SentinelQuery::Ask ask = ask_of(L, 2);
        return push_answer(L, ask_sentinel(target, ask, to_string(L, 3)));
    });
}

// core.sentinel_pool_name(host, port, username, password, custom_pool)
int pool_name(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::string name = sentinel_pool_name(to_string(L, 1), static_cast<int>(luaL_checknumber(L, 2)),
                                                    opt_string(L, 3), opt_string(L, 4), opt_string(L, 5));
        lua_pushlstring(L, name.data(), name.size());
        return 1;
    });
}

const luaL_Reg kQueryMethods[] = {
    {"request", query_request},
    {"feed", query_feed},
    {"answer", query_answer},
    {nullptr, nullptr},
};

}  // namespace

void register_sentinel(lua_State* L) {
    luaL_newmetatable(L, kSentinelQueryType);
    lua_newtable(L);
    luaL_register(L, nullptr, kQueryMethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc_object<SentinelQuery>);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_pushcfunction(L, query_new);
    lua_setfield(L, -2, "sentinel_query");
    lua_pushcfunction(L, ask_native);
    lua_setfield(L, -2, "ask_sentinel");
    lua_pushcfunction(L, pool_name);
    lua_setfield(L, -2, "sentinel_pool_name");
}

}  // namespace rsh
