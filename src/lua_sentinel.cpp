#include "lua_sentinel.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "errors.hpp"
#include "lua_util.hpp"
#include "sentinel_client.hpp"
#include "sentinel_watch.hpp"
#include "session_client.hpp"

namespace rsh {
namespace {

constexpr const char* kSentinelRoundType = "resty.session.hiredis.core.sentinel_round";
constexpr const char* kSentinelWatchType = "resty.session.hiredis.core.sentinel_watch";

std::optional<std::string> opt_string(lua_State* L, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING) return std::nullopt;
    return to_string(L, idx);
}

SentinelQuery::Ask ask_of(lua_State* L, int idx) {
    const char* ask = luaL_checkstring(L, idx);
    if (std::strcmp(ask, "master") == 0) return SentinelQuery::Ask::Master;
    if (std::strcmp(ask, "replicas") == 0) return SentinelQuery::Ask::Replicas;
    if (std::strcmp(ask, "promoted") == 0) return SentinelQuery::Ask::Promoted;
    throw ArgumentError("invalid ask: must be \"master\", \"replicas\" or \"promoted\"");
}

void push_address(lua_State* L, const SentinelAddress& address) {
    lua_pushlstring(L, address.host.data(), address.host.size());
    lua_pushinteger(L, address.port);
}

// "master", host, port, from | "failover", host, port, { leaders } (ask them for
// the replica promoted; host:port is the master they still name) |
// "replicas", { {host=, port=}... }, from | "unknown" | "error", err
// (from: 1-based, in the order the sentinels were given)
int push_choice(lua_State* L, const SentinelChoice& choice) {
    const int from = static_cast<int>(choice.from) + 1;
    switch (choice.kind) {
    case SentinelChoice::Kind::Master:
        lua_pushliteral(L, "master");
        push_address(L, choice.address);
        lua_pushinteger(L, from);
        return 4;
    case SentinelChoice::Kind::AskPromoted: {
        lua_pushliteral(L, "failover");
        push_address(L, choice.address);
        lua_createtable(L, static_cast<int>(choice.leaders.size()), 0);
        int i = 0;
        for (const std::size_t leader : choice.leaders) {
            lua_pushinteger(L, static_cast<lua_Integer>(leader) + 1);
            lua_rawseti(L, -2, ++i);
        }
        return 4;
    }
    case SentinelChoice::Kind::Replicas: {
        lua_pushliteral(L, "replicas");
        lua_createtable(L, static_cast<int>(choice.replicas.size()), 0);
        int i = 0;
        for (const auto& replica : choice.replicas) {
            lua_createtable(L, 0, 2);
            lua_pushlstring(L, replica.host.data(), replica.host.size());
            lua_setfield(L, -2, "host");
            lua_pushinteger(L, replica.port);
            lua_setfield(L, -2, "port");
            lua_rawseti(L, -2, ++i);
        }
        lua_pushinteger(L, from);
        return 3;
    }
    case SentinelChoice::Kind::UnknownMaster:
        lua_pushliteral(L, "unknown");
        return 1;
    case SentinelChoice::Kind::NoAnswer:
        break;
    }
    lua_pushliteral(L, "error");
    lua_pushlstring(L, choice.error.data(), choice.error.size());
    return 2;
}

SentinelRound* check_round(lua_State* L) {
    return static_cast<SentinelRound*>(luaL_checkudata(L, 1, kSentinelRoundType));
}

// 1-based index argument -> the round's index.
std::size_t index_of(lua_State* L, SentinelRound& round, int idx) {
    const lua_Integer i = luaL_checkinteger(L, idx);
    if (i < 1 || static_cast<std::size_t>(i) > round.size()) throw ArgumentError("invalid sentinel index");
    return static_cast<std::size_t>(i - 1);
}

// core.sentinel_round(ask, master_name, now_ms)
int round_new(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const SentinelQuery::Ask ask = ask_of(L, 1);
        push_object<SentinelRound>(L, kSentinelRoundType, ask, to_string(L, 2), luaL_checknumber(L, 3));
        return 1;
    });
}

// round:reset(ask, master_name, now_ms): a new round in this object (its queries
// and buffers kept: the cosocket driver reuses its rounds)
int round_reset(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        std::size_t len = 0;
        const char* master = luaL_checklstring(L, 3, &len);
        round->reset(ask_of(L, 2), std::string_view(master, len), luaL_checknumber(L, 4));
        return 0;
    });
}

// round:add(retry) -> index
int round_add(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        lua_pushinteger(L, static_cast<lua_Integer>(round->add(lua_toboolean(L, 2) != 0)) + 1);
        return 1;
    });
}

// round:prepare(i, username, password, authenticate) -> request bytes
int round_prepare(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::string_view bytes =
            round->prepare(index_of(L, *round, 2), opt_string(L, 3), opt_string(L, 4), lua_toboolean(L, 5) != 0);
        lua_pushlstring(L, bytes.data(), bytes.size());
        return 1;
    });
}

// round:feed(i, data) -> done | nil, err (fed after its answer)
int round_feed(lua_State* L) {
    SentinelRound* round = check_round(L);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 3, &len);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        lua_pushboolean(L, round->feed(index_of(L, *round, 2), data, len));
        return 1;
    });
}

// round:failed(i) -> nil (answered, or not done) | err
int round_failed(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::size_t i = index_of(L, *round, 2);
        if (!round->failed(i)) return 0;
        const std::string& error = round->error(i);
        lua_pushlstring(L, error.data(), error.size());
        return 1;
    });
}

// round:fail(i, err)
int round_fail(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        round->fail(index_of(L, *round, 2), to_string(L, 3));
        return 0;
    });
}

// round:retry_budget(now_ms) -> ms | nil (no bound)
int round_retry_budget(lua_State* L) {
    SentinelRound* round = check_round(L);
    const std::optional<double> budget = round->retry_budget_ms(luaL_checknumber(L, 2));
    if (!budget) return 0;
    lua_pushnumber(L, *budget);
    return 1;
}

int round_choose(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] { return push_choice(L, round->choose()); });
}

// round:promoted(i) on a "promoted" round -> host, port, true (the replica the
// failover promotes) | host, port, false (the master the leader names now) |
// nil (sentinel i failed)
int round_promoted(lua_State* L) {
    SentinelRound* round = check_round(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::size_t i = index_of(L, *round, 2);
        if (!round->done(i) || round->failed(i)) return 0;
        const SentinelAnswer& answer = round->answer(i);
        if (answer.kind != SentinelAnswer::Kind::Promoted && answer.kind != SentinelAnswer::Kind::Master) return 0;
        push_address(L, answer.address);
        lua_pushboolean(L, answer.kind == SentinelAnswer::Kind::Promoted);
        return 3;
    });
}

double number_field(lua_State* L, int idx, const char* name) {
    lua_getfield(L, idx, name);
    const double value = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return value;
}

bool boolean_field(lua_State* L, int idx, const char* name) {
    lua_getfield(L, idx, name);
    const bool value = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    return value;
}

std::optional<std::string> string_field(lua_State* L, int idx, const char* name) {
    lua_getfield(L, idx, name);
    auto value = opt_string(L, -1);
    lua_pop(L, 1);
    return value;
}

// A sentinel target's TLS settings (its ssl_* and server_name fields).
TlsSettings tls_fields(lua_State* L, int idx) {
    TlsSettings tls;
    tls.verify = boolean_field(L, idx, "ssl_verify");
    tls.server_name = string_field(L, idx, "server_name").value_or("");
    tls.trusted_certificate = string_field(L, idx, "ssl_trusted_certificate").value_or("");
    tls.client_cert = string_field(L, idx, "ssl_client_cert").value_or("");
    tls.client_priv_key = string_field(L, idx, "ssl_client_priv_key").value_or("");
    return tls;
}

// core.ask_sentinels(targets, ask, master_name) over the native transport:
// push_choice's results, never "failover" ("master" then has a 5th result, true
// when the address is the replica a failover in progress promotes). Sets
// targets[i].failure to why sentinel i did not answer, or nil.
// target = { host, port, pool, username, password, force_auth, retry,
// connect_timeout, send_timeout, read_timeout, keepalive_timeout, pool_size, ssl,
// ssl_verify, server_name, ssl_trusted_certificate, ssl_client_cert,
// ssl_client_priv_key }.
int ask_native(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        std::vector<SentinelTarget> targets(lua_objlen(L, 1));
        for (std::size_t i = 0; i < targets.size(); ++i) {
            lua_rawgeti(L, 1, static_cast<int>(i) + 1);
            luaL_checktype(L, -1, LUA_TTABLE);
            const int t = lua_gettop(L);
            SentinelTarget& target = targets[i];
            target.host = string_field(L, t, "host").value_or("127.0.0.1");
            target.port = static_cast<int>(number_field(L, t, "port"));
            target.pool_name = string_field(L, t, "pool").value_or("");
            target.username = string_field(L, t, "username");
            target.password = string_field(L, t, "password");
            target.force_auth = boolean_field(L, t, "force_auth");
            target.ssl = boolean_field(L, t, "ssl");
            if (target.ssl) target.tls = tls_fields(L, t);
            target.retry = boolean_field(L, t, "retry");
            target.connect_timeout = number_field(L, t, "connect_timeout");
            target.send_timeout = number_field(L, t, "send_timeout");
            target.read_timeout = number_field(L, t, "read_timeout");
            target.keepalive_timeout = number_field(L, t, "keepalive_timeout");
            target.pool_size = std::max(1, static_cast<int>(number_field(L, t, "pool_size")));
            lua_pop(L, 1);
        }
        const SentinelQuery::Ask ask = ask_of(L, 2);
        const SentinelLookup lookup = ask_sentinels(targets, ask, to_string(L, 3));
        for (std::size_t i = 0; i < targets.size(); ++i) {
            lua_rawgeti(L, 1, static_cast<int>(i) + 1);
            const std::string& failure = lookup.failures[i];
            if (failure.empty()) lua_pushnil(L);
            else lua_pushlstring(L, failure.data(), failure.size());
            lua_setfield(L, -2, "failure");
            lua_pop(L, 1);
        }
        const int n = push_choice(L, lookup.choice);
        if (lookup.choice.kind != SentinelChoice::Kind::Master) return n;
        lua_pushboolean(L, lookup.promoted);
        return n + 1;
    });
}

// core.sentinel_pool_name(host, port, username, password, custom_pool[, tls]):
// tls = the target's TLS fields (ssl, ssl_verify, server_name, ...), when any.
int pool_name(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        std::optional<TlsSettings> tls;
        if (lua_istable(L, 6) && boolean_field(L, 6, "ssl")) tls = tls_fields(L, 6);
        const std::string name = sentinel_pool_name(to_string(L, 1), static_cast<int>(luaL_checknumber(L, 2)),
                                                    opt_string(L, 3), opt_string(L, 4), opt_string(L, 5), tls);
        lua_pushlstring(L, name.data(), name.size());
        return 1;
    });
}

// core.sentinel_generation() -> a number never handed out before in this
// process (whatever the Lua state: worker thread VMs share the native pools).
int generation(lua_State* L) {
    static std::atomic<long long> next{0};
    lua_pushnumber(L, static_cast<lua_Number>(++next));
    return 1;
}

// core.retire_pool(name): closes the native data pool's connections (see
// session_client.hpp).
int retire(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        retire_pool(to_string(L, 1));
        return 0;
    });
}

// ---------------------------------------------------------------------------
// Subscriptions to the sentinels' events (the driver: sentinel_watch.lua)

SentinelWatch* check_watch(lua_State* L) {
    return static_cast<SentinelWatch*>(luaL_checkudata(L, 1, kSentinelWatchType));
}

// core.sentinel_watch() -> a subscription's state, reused over its connections
int watch_new(lua_State* L) {
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        push_object<SentinelWatch>(L, kSentinelWatchType);
        return 1;
    });
}

// watch:subscribe(username, password) -> the request bytes (starts over)
int watch_subscribe(lua_State* L) {
    SentinelWatch* watch = check_watch(L);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::string_view request = watch->subscribe(opt_string(L, 2), opt_string(L, 3));
        lua_pushlstring(L, request.data(), request.size());
        return 1;
    });
}

// watch:ping() -> PING's bytes
int watch_ping(lua_State* L) {
    check_watch(L);
    const std::string_view request = SentinelWatch::ping();
    lua_pushlstring(L, request.data(), request.size());
    return 1;
}

// watch:feed(data) -> subscribed, events, pongs | nil, err (an error reply, or
// bytes that break the protocol: the connection is to be closed)
int watch_feed(lua_State* L) {
    SentinelWatch* watch = check_watch(L);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 2, &len);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const SentinelWatch::Progress progress = watch->feed(data, len);
        lua_pushboolean(L, watch->subscribed());
        lua_pushinteger(L, static_cast<lua_Integer>(progress.events));
        lua_pushinteger(L, static_cast<lua_Integer>(progress.pongs));
        return 3;
    });
}

const luaL_Reg kWatchMethods[] = {
    {"subscribe", watch_subscribe},
    {"ping", watch_ping},
    {"feed", watch_feed},
    {nullptr, nullptr},
};

const luaL_Reg kRoundMethods[] = {
    {"reset", round_reset},
    {"add", round_add},
    {"prepare", round_prepare},
    {"feed", round_feed},
    {"failed", round_failed},
    {"fail", round_fail},
    {"retry_budget", round_retry_budget},
    {"choose", round_choose},
    {"promoted", round_promoted},
    {nullptr, nullptr},
};

}  // namespace

void register_sentinel(lua_State* L) {
    register_type<SentinelRound>(L, kSentinelRoundType, kRoundMethods);
    register_type<SentinelWatch>(L, kSentinelWatchType, kWatchMethods);

    lua_pushcfunction(L, round_new);
    lua_setfield(L, -2, "sentinel_round");
    lua_pushcfunction(L, ask_native);
    lua_setfield(L, -2, "ask_sentinels");
    lua_pushcfunction(L, pool_name);
    lua_setfield(L, -2, "sentinel_pool_name");
    lua_pushcfunction(L, generation);
    lua_setfield(L, -2, "sentinel_generation");
    lua_pushcfunction(L, retire);
    lua_setfield(L, -2, "retire_pool");
    lua_pushcfunction(L, watch_new);
    lua_setfield(L, -2, "sentinel_watch");
}

}  // namespace rsh
