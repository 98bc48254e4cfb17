// Storage method arguments from the Lua stack into Operations, and Results
// back onto it. Bad arguments throw ArgumentError("invalid <arg>: <why>")
// before anything is built, so nothing reaches Redis.
#pragma once

#include <cstddef>

#include <lua.hpp>

#include "keys.hpp"
#include "operation.hpp"

namespace rsh {

// The numbers are the driver's method ids (lua/resty/session/hiredis/cosocket.lua).
enum class Method { Set = 1, Get = 2, Delete = 3, ReadMetadata = 4 };

// Starts op (reused: its buffers keep their capacity) as a call of method whose
// arguments start at stack index first; the stack top moves. Its Lua calls that may
// raise (metadata field reads) come before any C++ object is made: `op` and `naming`
// must live in userdata, not on the C++ stack (under PUC Lua an error would leak them).
// A set's value longer than max_value (the configuration's max_reply_size) is
// refused: whatever is written must read back.
void load_operation(lua_State* L, Operation& op, Method method, const KeyNaming& naming, int first,
                    std::size_t max_value);
// Pushes what the storage method returns; returns the number of values. Pushes may
// raise (out of memory): `result` must not be a temporary, or use protected_push.
int push_result(lua_State* L, const Result& result);

}  // namespace rsh
