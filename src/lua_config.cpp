#include "lua_config.hpp"

#include <cstring>
#include <optional>
#include <string>

#include "errors.hpp"
#include "lua_util.hpp"

namespace rsh {
namespace {

constexpr const char* kFields[] = {
    "prefix", "suffix", "host", "port", "socket", "username", "password", "database",
    "connect_timeout", "send_timeout", "read_timeout", "keepalive_timeout", "pool", "pool_size",
    "backlog", "ssl", "ssl_verify", "server_name", "ssl_trusted_certificate", "ssl_client_cert",
    "ssl_client_priv_key", "force_auth", "transport", "pipelining", "role", "max_reply_size",
    "wait_replicas", "wait_timeout",
};

// resty.session.hiredis.new routes these to its cluster and sentinel clients
// before the core sees them; the core itself connecting to a single node
// instead would be a silent surprise.
constexpr const char* kUnsupportedFields[][2] = {
    {"nodes", "Redis Cluster (nodes) is served by resty.session.hiredis, not by the core"},
    {"sentinels", "Redis Sentinel (sentinels) is served by resty.session.hiredis, not by the core"},
};

std::optional<std::string> opt_string(lua_State* L, int idx, const char* field) {
    if (lua_isnil(L, idx)) return std::nullopt;
    if (lua_type(L, idx) != LUA_TSTRING) invalid(field, "must be a string");
    return to_string(L, idx);
}

std::optional<std::string> opt_nonempty(lua_State* L, int idx, const char* field) {
    auto value = opt_string(L, idx, field);
    if (value && value->empty()) invalid(field, "must not be empty");
    return value;
}

std::optional<bool> opt_bool(lua_State* L, int idx, const char* field) {
    if (lua_isnil(L, idx)) return std::nullopt;
    if (lua_type(L, idx) != LUA_TBOOLEAN) invalid(field, "must be a boolean");
    return lua_toboolean(L, idx) != 0;
}

// Numbers, and strings that Lua's tonumber() converts (lua-resty-redis and
// cosockets convert so; configurations read from the environment are strings).
std::optional<double> opt_number(lua_State* L, int idx, const char* field) {
    if (lua_isnil(L, idx)) return std::nullopt;
    const int type = lua_type(L, idx);
    if (type == LUA_TNUMBER || (type == LUA_TSTRING && lua_isnumber(L, idx))) return lua_tonumber(L, idx);
    invalid(field, type == LUA_TSTRING ? "must be a number (a string that is not numeric)" : "must be a number");
}

double timeout(lua_State* L, int idx, const char* field) {
    auto value = opt_number(L, idx, field);
    if (!value) return kDefaultTimeoutMs;
    check_timeout(field, *value);
    return *value;
}

void push_opt(lua_State* L, const std::optional<std::string>& v) {
    if (v) lua_pushlstring(L, v->data(), v->size()); else lua_pushnil(L);
}
void push_opt(lua_State* L, const std::optional<bool>& v) {
    if (v) lua_pushboolean(L, *v); else lua_pushnil(L);
}
template <class N>
void push_opt(lua_State* L, const std::optional<N>& v) {
    if (v) lua_pushnumber(L, static_cast<lua_Number>(*v)); else lua_pushnil(L);
}

// storage.options with upstream's keys and the values in effect: a snapshot
// built per read (like every field read), so writing into it changes nothing;
// options change through their configuration fields (storage.pool_size = 10).
void push_options(lua_State* L, const Config& c) {
    lua_createtable(L, 0, 6);
    push_opt(L, c.pool);
    lua_setfield(L, -2, "pool");
    lua_pushinteger(L, c.pool_size);
    lua_setfield(L, -2, "pool_size");
    push_opt(L, c.backlog);
    lua_setfield(L, -2, "backlog");
    lua_pushboolean(L, c.ssl);
    lua_setfield(L, -2, "ssl");
    push_opt(L, c.ssl_verify);
    lua_setfield(L, -2, "ssl_verify");
    push_opt(L, c.server_name);
    lua_setfield(L, -2, "server_name");
}

bool is(const char* a, const char* b) { return std::strcmp(a, b) == 0; }

}  // namespace

Config read_config(lua_State* L, int idx) {
    if (lua_isnoneornil(L, idx)) return Config{};
    if (lua_type(L, idx) != LUA_TTABLE) invalid("configuration", "must be a table");
    // Lua first, while no C++ object is alive (a Lua error longjmps past destructors
    // under PUC Lua): every field's value onto the stack, then Config from the stack
    // with reads that never raise.
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    for (const auto& [field, why] : kUnsupportedFields) {
        lua_pushstring(L, field);
        lua_rawget(L, idx);
        const bool present = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (present) invalid(field, why);
    }
    constexpr int kFieldCount = static_cast<int>(sizeof kFields / sizeof kFields[0]);
    luaL_checkstack(L, kFieldCount, "configuration");
    const int first = lua_gettop(L) + 1;
    for (const char* field : kFields) {
        lua_pushstring(L, field);
        lua_rawget(L, idx);
    }
    Config config;
    for (int i = 0; i < kFieldCount; ++i) set_config_field(L, config, kFields[i], first + i);
    lua_settop(L, first - 1);
    if (config.ssl_client_cert.has_value() != config.ssl_client_priv_key.has_value()) {
        invalid(config.ssl_client_cert ? "ssl_client_priv_key" : "ssl_client_cert",
                "ssl_client_cert and ssl_client_priv_key go together");
    }
    return config;
}

void set_config_field(lua_State* L, Config& c, const char* name, int idx) {
    if (is(name, "prefix")) c.prefix = opt_string(L, idx, name);
    else if (is(name, "suffix")) c.suffix = opt_string(L, idx, name);
    else if (is(name, "host")) c.host = opt_nonempty(L, idx, name).value_or("127.0.0.1");
    else if (is(name, "port")) {
        auto port = opt_number(L, idx, name);
        if (port) check_port(*port);
        c.port = port ? static_cast<int>(*port) : 6379;
    } else if (is(name, "socket")) {
        c.socket = opt_nonempty(L, idx, name);
        if (c.socket && normalize_socket_path(*c.socket).empty()) invalid(name, "must name a path");
    } else if (is(name, "username")) c.username = opt_string(L, idx, name);
    else if (is(name, "password")) c.password = opt_string(L, idx, name);
    else if (is(name, "database")) {
        auto db = opt_number(L, idx, name);
        if (db) check_count(name, *db, 0);
        c.database = db ? std::optional<long long>(static_cast<long long>(*db)) : std::nullopt;
    } else if (is(name, "connect_timeout")) c.connect_timeout = timeout(L, idx, name);
    else if (is(name, "send_timeout")) c.send_timeout = timeout(L, idx, name);
    else if (is(name, "read_timeout")) c.read_timeout = timeout(L, idx, name);
    else if (is(name, "keepalive_timeout")) c.keepalive_timeout = timeout(L, idx, name);
    else if (is(name, "pool")) c.pool = opt_nonempty(L, idx, name);
    else if (is(name, "pool_size")) {
        auto size = opt_number(L, idx, name);
        if (size) check_count(name, *size, 1);
        c.pool_size = size ? static_cast<int>(*size) : kDefaultPoolSize;
    } else if (is(name, "backlog")) {
        auto backlog = opt_number(L, idx, name);
        if (backlog) check_count(name, *backlog, 0);
        c.backlog = backlog ? std::optional<int>(static_cast<int>(*backlog)) : std::nullopt;
    } else if (is(name, "ssl")) c.ssl = opt_bool(L, idx, name).value_or(false);
    else if (is(name, "ssl_verify")) c.ssl_verify = opt_bool(L, idx, name);
    else if (is(name, "server_name")) c.server_name = opt_nonempty(L, idx, name);
    else if (is(name, "ssl_trusted_certificate")) c.ssl_trusted_certificate = opt_nonempty(L, idx, name);
    else if (is(name, "ssl_client_cert")) c.ssl_client_cert = opt_nonempty(L, idx, name);
    else if (is(name, "ssl_client_priv_key")) c.ssl_client_priv_key = opt_nonempty(L, idx, name);
    else if (is(name, "force_auth")) c.force_auth = opt_bool(L, idx, name);
    else if (is(name, "pipelining")) c.pipelining = opt_bool(L, idx, name);
    else if (is(name, "transport")) {
        c.transport = opt_string(L, idx, name);
        if (c.transport) check_transport(*c.transport);
    } else if (is(name, "max_reply_size")) {
        auto size = opt_number(L, idx, name);
        if (size) check_max_reply_size(*size);
        c.max_reply_size = size.value_or(kDefaultMaxReplySize);
    } else if (is(name, "wait_replicas")) {
        auto replicas = opt_number(L, idx, name);
        if (replicas) check_count(name, *replicas, 0);
        c.wait_replicas = replicas ? static_cast<int>(*replicas) : 0;
    } else if (is(name, "wait_timeout")) {
        auto wait = opt_number(L, idx, name);
        if (wait) check_wait_timeout(*wait);
        c.wait_timeout = wait.value_or(kDefaultWaitTimeoutMs);
    } else if (is(name, "role")) {
        c.role = opt_string(L, idx, name);
        if (c.role) check_role(*c.role);
    } else {
        invalid("field", std::string(name) + " is not a configuration field");
    }
}

void push_config_table(lua_State* L, const Config& config) {
    lua_createtable(L, 0, static_cast<int>(sizeof kFields / sizeof kFields[0]));
    for (const char* field : kFields) {
        push_config_field(L, config, field);
        lua_setfield(L, -2, field);
    }
}

bool push_config_field(lua_State* L, const Config& c, const char* name) {
    if (is(name, "prefix")) push_opt(L, c.prefix);
    else if (is(name, "suffix")) push_opt(L, c.suffix);
    else if (is(name, "host")) lua_pushlstring(L, c.host.data(), c.host.size());
    else if (is(name, "port")) lua_pushinteger(L, c.port);
    else if (is(name, "socket")) push_opt(L, c.socket);
    else if (is(name, "username")) push_opt(L, c.username);
    else if (is(name, "password")) push_opt(L, c.password);
    else if (is(name, "database")) push_opt(L, c.database);
    else if (is(name, "connect_timeout")) lua_pushnumber(L, c.connect_timeout);
    else if (is(name, "send_timeout")) lua_pushnumber(L, c.send_timeout);
    else if (is(name, "read_timeout")) lua_pushnumber(L, c.read_timeout);
    else if (is(name, "keepalive_timeout")) lua_pushnumber(L, c.keepalive_timeout);
    else if (is(name, "pool")) push_opt(L, c.pool);
    else if (is(name, "pool_size")) lua_pushinteger(L, c.pool_size);
    else if (is(name, "backlog")) push_opt(L, c.backlog);
    else if (is(name, "ssl")) lua_pushboolean(L, c.ssl);
    else if (is(name, "ssl_verify")) push_opt(L, c.ssl_verify);
    else if (is(name, "server_name")) push_opt(L, c.server_name);
    else if (is(name, "ssl_trusted_certificate")) push_opt(L, c.ssl_trusted_certificate);
    else if (is(name, "ssl_client_cert")) push_opt(L, c.ssl_client_cert);
    else if (is(name, "ssl_client_priv_key")) push_opt(L, c.ssl_client_priv_key);
    else if (is(name, "force_auth")) push_opt(L, c.force_auth);
    else if (is(name, "transport")) push_opt(L, c.transport);
    else if (is(name, "pipelining")) push_opt(L, c.pipelining);
    else if (is(name, "role")) push_opt(L, c.role);
    else if (is(name, "max_reply_size")) lua_pushnumber(L, c.max_reply_size);
    else if (is(name, "wait_replicas")) lua_pushinteger(L, c.wait_replicas);
    else if (is(name, "wait_timeout")) lua_pushnumber(L, c.wait_timeout);
    else if (is(name, "options")) push_options(L, c);
    else return false;
    return true;
}

}  // namespace rsh
