// core.stats_counters(), core.stats_reset(), core.stats_enable(on): the core's
// counters (stats.hpp) for resty.session.hiredis.stats.
#pragma once

#include <lua.hpp>

namespace rsh {

// Adds the stats functions to the module table on top of the stack.
void register_stats(lua_State* L);

}  // namespace rsh
