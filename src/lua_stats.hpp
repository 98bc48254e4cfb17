// core.stats_counters(), core.stats_reset(), core.stats_enable(on),
// core.stats_record(...): the core's counters (stats.hpp) for
// resty.session.hiredis.stats; finish_meter for the C functions that end a call.
#pragma once

#include <lua.hpp>

#include "stats.hpp"

namespace rsh {

// Finishes meter by the n results a storage call pushed: `nil, err` is a
// failure, anything else a success. Returns n.
inline int finish_meter(lua_State* L, stats::CallMeter& meter, int n) {
    if (!meter.running()) return n;
    if (n == 2 && lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING) {
        std::size_t len = 0;
        const char* err = lua_tolstring(L, -1, &len);
        meter.fail(std::string_view(err, len));
    } else {
        meter.succeed();
    }
    return n;
}

// Adds the stats functions to the module table on top of the stack.
void register_stats(lua_State* L);

}  // namespace rsh
