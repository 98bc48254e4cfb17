#include "lua_stats.hpp"

#include <chrono>

#include "stats.hpp"

namespace rsh {
namespace {

// core.stats_counters() -> { ["connections.opened"] = n, ... } (a fresh table)
int stats_counters(lua_State* L) {
    lua_createtable(L, 0, static_cast<int>(stats::kCounters));
    for (std::size_t i = 0; i < stats::kCounters; ++i) {
        lua_pushnumber(L, static_cast<lua_Number>(stats::read(static_cast<stats::Counter>(i))));
        lua_setfield(L, -2, stats::kNames[i]);
    }
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

// core.monotonic_ms() -> milliseconds of a monotonic clock (the stats clock
// where the FFI is missing: PUC Lua).
int monotonic_ms(lua_State* L) {
    const auto since = std::chrono::steady_clock::now().time_since_epoch();
    lua_pushnumber(L, std::chrono::duration<double, std::milli>(since).count());
    return 1;
}

}  // namespace

void register_stats(lua_State* L) {
    lua_pushcfunction(L, stats_counters);
    lua_setfield(L, -2, "stats_counters");
    lua_pushcfunction(L, stats_reset);
    lua_setfield(L, -2, "stats_reset");
    lua_pushcfunction(L, stats_enable);
    lua_setfield(L, -2, "stats_enable");
    lua_pushcfunction(L, monotonic_ms);
    lua_setfield(L, -2, "monotonic_ms");
}

}  // namespace rsh
