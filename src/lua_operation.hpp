// Storage method arguments from the Lua stack into Operations, and Results
// back onto it. Bad arguments throw ArgumentError("invalid <arg>: <why>")
// before anything is built, so nothing reaches Redis.
#pragma once

#include <cstddef>
#include <string_view>

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

// A cosocket operation's environment table (set by its constructor) holds its
// request pieces: { head, value, tail }, the value being the caller's own Lua
// string. Making a request that carries a set's large value one Lua string costs
// LuaJIT a hash, a copy and a comparison with every interned string it collides
// with (a worker's profile: half of a set's instructions when values look alike).

// Pushes op's request (op at the absolute stack index op_index): one string, or,
// when it carries a set's large value held by the pieces table, that table,
// which sock:send takes as well.
void push_request(lua_State* L, int op_index, const Operation& op, std::string_view request);
// The pieces table of the operation at op_index holds the string at value_index
// as the value of the request about to be pushed.
void hold_request_value(lua_State* L, int op_index, int value_index);
// The pieces table lets go of the value (the call is over).
void forget_request_value(lua_State* L, int op_index);

}  // namespace rsh
