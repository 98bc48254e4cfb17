#include "lua_operation.hpp"

#include <cmath>
#include <ctime>
#include <string>

#include "errors.hpp"
#include "lua_util.hpp"

namespace rsh {
namespace {

// Assigns into out: a reused operation keeps its strings' capacity.
void string_arg(lua_State* L, int idx, const char* arg, std::string& out) {
    if (lua_type(L, idx) != LUA_TSTRING) invalid(arg, "must be a string");
    std::size_t len = 0;
    const char* s = lua_tolstring(L, idx, &len);
    out.assign(s, len);
}

bool absent(lua_State* L, int idx) {
    return lua_isnoneornil(L, idx) || (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx));
}

long long integer_arg(lua_State* L, int idx, const char* arg, long long min) {
    if (lua_type(L, idx) != LUA_TNUMBER) invalid(arg, "must be a number");
    double v = lua_tonumber(L, idx);
    if (!std::isfinite(v) || std::floor(v) != v || v < static_cast<double>(min) || v > 9007199254740991.0) {
        invalid(arg, min > 0 ? "must be a positive integer" : "must be a non-negative integer");
    }
    return static_cast<long long>(v);
}

// lua-resty-session passes ngx.time(); the documented short delete form has none.
double time_arg(lua_State* L, int idx) {
    if (lua_isnoneornil(L, idx)) return static_cast<double>(std::time(nullptr));
    if (lua_type(L, idx) != LUA_TNUMBER || !std::isfinite(lua_tonumber(L, idx))) {
        invalid("current_time", "must be a number");
    }
    return lua_tonumber(L, idx);
}

// metadata.audiences and metadata.subjects on the stack, fetched before any C++
// object exists: the field reads may run __index (as upstream's `metadata.audiences`
// does), and a Lua error must not longjmp past live C++ objects (PUC Lua runs no
// destructors). What is fetched is validated later, in argument order.
struct MetadataSlots {
    int argument = 0;  // stack index of the metadata argument; 0: absent
    int audiences = 0, subjects = 0;
};

MetadataSlots fetch_metadata(lua_State* L, int idx) {
    MetadataSlots slots;
    if (idx == 0 || absent(L, idx)) return slots;
    slots.argument = idx;
    if (lua_type(L, idx) != LUA_TTABLE) return slots;
    luaL_checkstack(L, 3, "metadata");  // the two fields, and one for string_array
    lua_getfield(L, idx, "audiences");
    slots.audiences = lua_gettop(L);
    lua_getfield(L, idx, "subjects");
    slots.subjects = lua_gettop(L);
    return slots;
}

// The length of the array of strings at stack index `slot` (metadata.<field>);
// reads that never raise.
std::size_t string_array_length(lua_State* L, int slot, const char* field) {
    if (lua_type(L, slot) != LUA_TTABLE) invalid("metadata", std::string(field) + " must be an array of strings");
    const std::size_t n = lua_objlen(L, slot);
    for (std::size_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, slot, static_cast<int>(i));
        const bool is_string = lua_type(L, -1) == LUA_TSTRING;
        lua_pop(L, 1);
        if (!is_string) invalid("metadata", std::string(field) + " must be an array of strings");
    }
    return n;
}

// Element i (from 1) of the array at `slot`, a string (checked), into `into`.
void string_element(lua_State* L, int slot, std::size_t i, std::string& into) {
    lua_rawgeti(L, slot, static_cast<int>(i));
    std::size_t len = 0;
    const char* s = lua_tolstring(L, -1, &len);
    into.assign(s, len);
    lua_pop(L, 1);
}

// The call's metadata (when given), into op's entries: their strings are the last
// call's, so that a call like it allocates nothing.
void metadata_arg(lua_State* L, const MetadataSlots& slots, Operation& op) {
    if (!slots.argument) return;
    if (lua_type(L, slots.argument) != LUA_TTABLE) invalid("metadata", "must be a table");
    const std::size_t n = string_array_length(L, slots.audiences, "audiences");
    if (string_array_length(L, slots.subjects, "subjects") != n) {
        invalid("metadata", "audiences and subjects differ in length");
    }
    Metadata& metadata = op.emplace_metadata(n);
    for (std::size_t i = 0; i < n; ++i) {
        auto& [audience, subject] = metadata.entries[i];
        string_element(L, slots.audiences, i + 1, audience);
        string_element(L, slots.subjects, i + 1, subject);
    }
}

// The most arguments a method takes: set(name, key, value, ttl, current_time,
// old_key, stale_ttl, metadata, remember).
constexpr int kMaxArguments = 9;

}  // namespace

void load_operation(lua_State* L, Operation& op, Method method, const KeyNaming& naming, int first,
                    std::size_t max_value) {
    // Lua first: fixed argument slots (fetched fields go above them), then the
    // metadata fields. Below this point Lua is only read with calls that never raise.
    lua_settop(L, first + kMaxArguments - 1);
    const bool short_delete = method == Method::Delete && lua_type(L, first + 2) == LUA_TTABLE &&
                              lua_isnil(L, first + 3);
    const int metadata_at = method == Method::Set      ? first + 7
                            : method != Method::Delete ? 0
                            : short_delete             ? first + 2
                                                       : first + 3;
    const MetadataSlots metadata = fetch_metadata(L, metadata_at);

    switch (method) {
    case Method::Set: {
        SetArgs& args = op.start_set(naming);
        string_arg(L, first, "name", args.name);
        string_arg(L, first + 1, "key", args.key);
        // refused before it is copied: get could never read back a longer value
        if (lua_type(L, first + 2) == LUA_TSTRING && lua_objlen(L, first + 2) > max_value) {
            invalid("value", std::to_string(lua_objlen(L, first + 2)) + " bytes exceed max_reply_size (" +
                                 std::to_string(max_value) + " bytes)");
        }
        string_arg(L, first + 2, "value", args.value);
        args.ttl = integer_arg(L, first + 3, "ttl", 1);
        metadata_arg(L, metadata, op);
        if (args.metadata || !lua_isnoneornil(L, first + 4)) args.current_time = time_arg(L, first + 4);
        if (!absent(L, first + 5)) {
            string_arg(L, first + 5, "old_key", op.emplace_old_key());
            args.stale_ttl = integer_arg(L, first + 6, "stale_ttl", 0);
        }
        // first + 8, `remember`, is accepted and has no effect (as upstream).
        return;
    }
    case Method::Get: {
        GetArgs& args = op.start_get(naming);
        string_arg(L, first, "name", args.name);
        string_arg(L, first + 1, "key", args.key);
        return;
    }
    case Method::Delete: {
        DeleteArgs& args = op.start_delete(naming);
        string_arg(L, first, "name", args.name);
        string_arg(L, first + 1, "key", args.key);
        // delete(name, key, current_time, metadata), or the documented delete(name, key, metadata).
        metadata_arg(L, metadata, op);
        args.current_time = time_arg(L, short_delete ? first + 3 : first + 2);
        return;
    }
    case Method::ReadMetadata: {
        ReadMetadataArgs& args = op.start_read_metadata(naming);
        string_arg(L, first, "name", args.name);
        string_arg(L, first + 1, "audience", args.audience);
        string_arg(L, first + 2, "subject", args.subject);
        args.current_time = time_arg(L, first + 3);
        return;
    }
    }
    throw ArgumentError("invalid method");
}

int push_result(lua_State* L, const Result& result) {
    switch (result.kind) {
    case Result::Kind::Ok:
        lua_pushboolean(L, 1);
        return 1;
    case Result::Kind::Nil:
        lua_pushnil(L);
        return 1;
    case Result::Kind::String:
        lua_pushlstring(L, result.text.data(), result.text.size());
        return 1;
    case Result::Kind::Map:
        lua_createtable(L, 0, static_cast<int>(result.map.size()));
        for (const auto& [key, score] : result.map) {
            lua_pushlstring(L, key.data(), key.size());
            lua_pushlstring(L, score.data(), score.size());
            lua_rawset(L, -3);
        }
        return 1;
    case Result::Kind::Version:
        lua_pushnumber(L, static_cast<lua_Number>(result.version));
        return 1;
    case Result::Kind::Error:
        lua_pushnil(L);
        lua_pushlstring(L, result.text.data(), result.text.size());
        return 2;
    }
    return 0;
}

namespace {
constexpr int kHead = 1, kValue = 2, kTail = 3;

void push_bytes(lua_State* L, std::string_view bytes) { lua_pushlstring(L, bytes.data(), bytes.size()); }
}  // namespace

void push_request(lua_State* L, int op_index, const Operation& op, std::string_view request) {
    const std::size_t at = op.value_offset();
    if (at == CommandBuffer::kNone) {
        push_bytes(L, request);
        return;
    }
    lua_getfenv(L, op_index);
    lua_rawgeti(L, -1, kValue);
    const bool held = lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1) == op.value_size();
    lua_pop(L, 1);
    if (!held) {  // (no caller's string: one string, as any request)
        lua_pop(L, 1);
        push_bytes(L, request);
        return;
    }
    push_bytes(L, request.substr(0, at));
    lua_rawseti(L, -2, kHead);
    push_bytes(L, request.substr(at + op.value_size()));
    lua_rawseti(L, -2, kTail);
}

void hold_request_value(lua_State* L, int op_index, int value_index) {
    lua_getfenv(L, op_index);
    lua_pushvalue(L, value_index);
    lua_rawseti(L, -2, kValue);
    lua_pop(L, 1);
}

void forget_request_value(lua_State* L, int op_index) {
    lua_getfenv(L, op_index);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        lua_rawseti(L, -2, kValue);
    }
    lua_pop(L, 1);
}

}  // namespace rsh
