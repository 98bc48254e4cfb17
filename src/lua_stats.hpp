// core.stats_counters(), core.stats_reset(), core.stats_enable(on),
// core.stats_record(...): the core's counters (stats.hpp) for
// resty.session.hiredis.stats; finish_meter for the C functions that end a call.
#pragma once

#include <lua.hpp>

#include <string_view>

#include "stats.hpp"

namespace rsh {

// Starts meter for a call of the storage method with this id (1-based, as the
// drivers pass it); an id out of range starts nothing (the call is refused).
inline void start_meter(stats::CallMeter& meter, lua_Integer method_id) {
    if (method_id >= 1 && method_id <= static_cast<lua_Integer>(stats::kMethods)) {
        meter.start(static_cast<std::size_t>(method_id - 1));
    }
}

// Whether a storage call's results at stack index r1 are `nil, err`: a failure,
// whose message goes into *err.
inline bool failed_with(lua_State* L, int r1, std::string_view* err) {
    if (!lua_isnil(L, r1) || lua_type(L, r1 + 1) != LUA_TSTRING) return false;
    std::size_t len = 0;
    const char* text = lua_tolstring(L, r1 + 1, &len);
    *err = std::string_view(text, len);
    return true;
}

// Finishes meter by the n results a storage call pushed: `nil, err` is a
// failure, anything else a success. Returns n.
inline int finish_meter(lua_State* L, stats::CallMeter& meter, int n) {
    if (!meter.running()) return n;
    std::string_view err;
    if (n == 2 && failed_with(L, lua_gettop(L) - 1, &err)) {
        meter.fail(err);
    } else {
        meter.succeed();
    }
    return n;
}

// Adds the stats functions to the module table on top of the stack.
void register_stats(lua_State* L);

}  // namespace rsh
