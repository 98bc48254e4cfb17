// Configuration fields between Lua and Config: read at new(), and read or
// written one at a time on an instance.
#pragma once

#include <lua.hpp>

#include "config.hpp"

namespace rsh {

// Reads the table at idx (nil: defaults); throws ArgumentError naming the field.
// Every Lua call that may raise runs before a C++ object exists.
Config read_config(lua_State* L, int idx);
// Pushes field `name` (nil when unset); returns false for an unknown name.
bool push_config_field(lua_State* L, const Config& config, const char* name);
// Pushes a table of every field that is set: the Lua module's plain-table mirror.
void push_config_table(lua_State* L, const Config& config);
// Sets field `name` from the value at idx; throws ArgumentError. Its Lua reads
// never raise (types are checked before values are read), so `config` may be a local.
void set_config_field(lua_State* L, Config& config, const char* name, int idx);

}  // namespace rsh
