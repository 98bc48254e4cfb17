#include "lua_stats.hpp"

#include <string_view>

#include "stats.hpp"

namespace rsh {
namespace {

// core.stats_counters() -> a fresh table: { ["connections.opened"] = n, ...,
// ops = { get = { calls, errors, sum_ms, counts = { ... } }, ... },
// errors = { timeout = n, ... } }
int stats_counters(lua_State* L) {
    lua_createtable(L, 0, static_cast<int>(stats::kCounters) + 2);
    for (std::size_t i = 0; i < stats::kCounters; ++i) {
        lua_pushnumber(L, static_cast<lua_Number>(stats::read(static_cast<stats::Counter>(i))));
        lua_setfield(L, -2, stats::kNames[i]);
    }
    constexpr auto relaxed = std::memory_order_relaxed;
    lua_createtable(L, 0, static_cast<int>(stats::kMethods));
    for (std::size_t m = 0; m < stats::kMethods; ++m) {
        const stats::MethodCounters& op = stats::methods[m];
        lua_createtable(L, 0, 4);
        lua_pushnumber(L, static_cast<lua_Number>(op.calls.load(relaxed)));
        lua_setfield(L, -2, "calls");
        lua_pushnumber(L, static_cast<lua_Number>(op.errors.load(relaxed)));
        lua_setfield(L, -2, "errors");
        lua_pushnumber(L, static_cast<lua_Number>(op.sum_ns.load(relaxed)) / 1e6);
        lua_setfield(L, -2, "sum_ms");
        lua_createtable(L, static_cast<int>(stats::kBuckets), 0);
        for (std::size_t b = 0; b < stats::kBuckets; ++b) {
            lua_pushnumber(L, static_cast<lua_Number>(op.buckets[b].load(relaxed)));
            lua_rawseti(L, -2, static_cast<int>(b + 1));
        }
        lua_setfield(L, -2, "counts");
        lua_setfield(L, -2, stats::kMethodNames[m]);
    }
    lua_setfield(L, -2, "ops");
    lua_createtable(L, 0, static_cast<int>(stats::kErrorClasses));
    for (std::size_t c = 0; c < stats::kErrorClasses; ++c) {
        lua_pushnumber(L, static_cast<lua_Number>(stats::error_classes[c].load(relaxed)));
        lua_setfield(L, -2, stats::kErrorClassNames[c]);
    }
    lua_setfield(L, -2, "errors");
    return 1;
}

// core.stats_record(method_id, started, r1, r2): counts a call that a Lua front
// ran (sentinel), started when inst:check_call returned `started` (0: counting
// was off then), with its results: `nil, err` is a failure.
int stats_record(lua_State* L) {
    const lua_Integer method = lua_tointeger(L, 1);
    const double started = lua_tonumber(L, 2);
    if (method < 1 || method > static_cast<lua_Integer>(stats::kMethods) || started <= 0) return 0;
    std::string_view err;
    stats::record_since(static_cast<std::size_t>(method - 1), started, failed_with(L, 3, &err) ? &err : nullptr);
    return 0;
}

// core.stats_classify(err) -> "timeout" | "connect" | ... (the class a failed call's error counts under)
int stats_classify(lua_State* L) {
    std::size_t len = 0;
    const char* err = luaL_checklstring(L, 1, &len);
    lua_pushstring(L, stats::kErrorClassNames[static_cast<std::size_t>(stats::classify({err, len}))]);
    return 1;
}

int stats_reset(lua_State*) {
    stats::reset();
    return 0;
}

// core.stats_enable(on): counting on or off from now on.
int stats_enable(lua_State* L) {
    stats::enabled.store(lua_toboolean(L, 1) != 0, std::memory_order_relaxed);
    return 0;
}

}  // namespace

void register_stats(lua_State* L) {
    lua_pushcfunction(L, stats_counters);
    lua_setfield(L, -2, "stats_counters");
    lua_pushcfunction(L, stats_reset);
    lua_setfield(L, -2, "stats_reset");
    lua_pushcfunction(L, stats_enable);
    lua_setfield(L, -2, "stats_enable");
    lua_pushcfunction(L, stats_record);
    lua_setfield(L, -2, "stats_record");
    lua_pushcfunction(L, stats_classify);
    lua_setfield(L, -2, "stats_classify");
}

}  // namespace rsh
