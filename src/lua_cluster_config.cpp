#include "lua_cluster_config.hpp"

#include <cstdlib>
#include <string>

#include "errors.hpp"
#include "lua_config.hpp"
#include "lua_util.hpp"

namespace rsh {
namespace {

// The single-node fields that apply to every node of a cluster.
constexpr const char* kSharedFields[] = {
    "prefix", "suffix", "username", "password", "connect_timeout", "send_timeout", "read_timeout",
    "keepalive_timeout", "pool", "pool_size", "backlog", "ssl", "ssl_verify", "server_name",
    "ssl_trusted_certificate", "ssl_client_cert", "ssl_client_priv_key", "force_auth", "transport",
    "pipelining", "max_reply_size", "wait_replicas", "wait_timeout",
};

// A number, or a numeric string (configurations read from environment variables).
std::optional<double> opt_number(lua_State* L, int idx, const std::string& field) {
    if (lua_isnil(L, idx)) return std::nullopt;
    if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        const std::string text = to_string(L, idx);
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (!text.empty() && end && *end == '\0') return value;
    }
    invalid(field, "must be a number");
}

std::optional<std::string> opt_string(lua_State* L, int idx, const std::string& field) {
    if (lua_isnil(L, idx)) return std::nullopt;
    if (lua_type(L, idx) != LUA_TSTRING) invalid(field, "must be a string");
    return to_string(L, idx);
}

// Runs read(value at -1) for t[name] (t at idx), popping it even when read throws.
template <class Read>
void with_field(lua_State* L, int idx, const char* name, Read&& read) {
    lua_getfield(L, idx, name);
    try {
        read();
    } catch (...) {
        lua_pop(L, 1);
        throw;
    }
    lua_pop(L, 1);
}

NodeAddress read_node(lua_State* L, int idx, std::size_t i) {
    const std::string where = "nodes[" + std::to_string(i) + "]";
    if (lua_type(L, idx) != LUA_TTABLE) invalid("nodes", where + " must be a table {ip=, port=}");
    NodeAddress node{"127.0.0.1", 6379};
    with_field(L, idx, "ip", [&] {
        if (auto ip = opt_string(L, -1, "nodes")) node.host = *ip;
    });
    with_field(L, idx, "host", [&] {
        if (auto host = opt_string(L, -1, "nodes")) node.host = *host;
    });
    if (node.host.empty()) invalid("nodes", where + ".ip must not be empty");
    with_field(L, idx, "port", [&] {
        auto port = opt_number(L, -1, "nodes");
        if (!port) return;
        if (!(*port >= 1 && *port <= 65535 && static_cast<int>(*port) == *port)) {
            invalid("nodes", where + ".port must be an integer from 1 to 65535");
        }
        node.port = static_cast<int>(*port);
    });
    return node;
}

}  // namespace

ClusterConfig read_cluster_config(lua_State* L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE) invalid("configuration", "must be a table");
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    ClusterConfig c;

    lua_createtable(L, 0, 24);
    for (const char* field : kSharedFields) {
        lua_getfield(L, idx, field);
        lua_setfield(L, -2, field);
    }
    try {
        c.base = read_config(L, lua_gettop(L));
    } catch (...) {
        lua_pop(L, 1);
        throw;
    }
    lua_pop(L, 1);

    with_field(L, idx, "database", [&] {
        if (!lua_isnil(L, -1)) invalid("database", "not supported by Redis Cluster (only database 0 exists)");
    });
    with_field(L, idx, "nodes", [&] {
        if (lua_type(L, -1) != LUA_TTABLE || lua_objlen(L, -1) == 0) {
            invalid("nodes", "must be a non-empty array of {ip=, port=}");
        }
        const std::size_t n = lua_objlen(L, -1);
        for (std::size_t i = 1; i <= n; ++i) {
            lua_rawgeti(L, -1, static_cast<int>(i));
            try {
                c.nodes.push_back(read_node(L, lua_gettop(L), i));
            } catch (...) {
                lua_pop(L, 1);
                throw;
            }
            lua_pop(L, 1);
        }
    });
    with_field(L, idx, "name", [&] { c.name = opt_string(L, -1, "name"); });
    with_field(L, idx, "lock_zone", [&] { c.lock_zone = opt_string(L, -1, "lock_zone"); });
    with_field(L, idx, "lock_prefix", [&] { c.lock_prefix = opt_string(L, -1, "lock_prefix"); });
    with_field(L, idx, "max_redirections", [&] {
        if (auto v = opt_number(L, -1, "max_redirections")) {
            check_count("max_redirections", *v, 0);
            c.max_redirections = static_cast<int>(*v);
        }
    });
    with_field(L, idx, "max_connection_attempts", [&] {
        if (auto v = opt_number(L, -1, "max_connection_attempts")) {
            check_count("max_connection_attempts", *v, 1);
            c.max_connection_attempts = static_cast<int>(*v);
        }
    });
    with_field(L, idx, "max_connection_timeout", [&] {
        if (auto v = opt_number(L, -1, "max_connection_timeout")) {
            if (!(*v > 0 && *v <= kMaxTimeoutMs)) {
                invalid("max_connection_timeout", "must be a number of milliseconds from 1 to 2147483647");
            }
            c.max_connection_timeout = *v;
        }
    });
    return c;
}

}  // namespace rsh
