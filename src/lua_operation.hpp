// Storage method arguments from the Lua stack into Operations, and Results
// back onto it. Bad arguments throw ArgumentError("invalid <arg>: <why>")
// before anything is built, so nothing reaches Redis.
#pragma once

#include <lua.hpp>

#include "keys.hpp"
#include "operation.hpp"

namespace rsh {

enum class Method { Set, Get, Delete, ReadMetadata };

// The method's arguments start at stack index first.
Operation operation_from_lua(lua_State* L, Method method, const KeyNaming& naming, int first);
// Pushes what the storage method returns; returns the number of values.
int push_result(lua_State* L, const Result& result);

}  // namespace rsh
