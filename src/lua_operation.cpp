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

// Reads array t[field] of strings (t at idx); returns its elements.
std::vector<std::string> string_array(lua_State* L, int idx, const char* field) {
    lua_getfield(L, idx, field);
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        invalid("metadata", std::string(field) + " must be an array of strings");
    }
    std::vector<std::string> out;
    const std::size_t n = lua_objlen(L, -1);
    for (std::size_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, -1, static_cast<int>(i));
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 2);
            invalid("metadata", std::string(field) + " must be an array of strings");
        }
        out.push_back(to_string(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out;
}

std::optional<Metadata> metadata_arg(lua_State* L, int idx) {
    if (absent(L, idx)) return std::nullopt;
    if (lua_type(L, idx) != LUA_TTABLE) invalid("metadata", "must be a table");
    auto audiences = string_array(L, idx, "audiences");
    auto subjects = string_array(L, idx, "subjects");
    if (audiences.size() != subjects.size()) invalid("metadata", "audiences and subjects differ in length");
    Metadata metadata;
    for (std::size_t i = 0; i < audiences.size(); ++i) {
        metadata.entries.emplace_back(std::move(audiences[i]), std::move(subjects[i]));
    }
    return metadata;
}

}  // namespace

void load_operation(lua_State* L, Operation& op, Method method, const KeyNaming& naming, int first) {
    switch (method) {
    case Method::Set: {
        SetArgs& args = op.start_set(naming);
        string_arg(L, first, "name", args.name);
        string_arg(L, first + 1, "key", args.key);
        string_arg(L, first + 2, "value", args.value);
        args.ttl = integer_arg(L, first + 3, "ttl", 1);
        args.metadata = metadata_arg(L, first + 7);
        if (args.metadata || !lua_isnoneornil(L, first + 4)) args.current_time = time_arg(L, first + 4);
        if (!absent(L, first + 5)) {
            args.old_key.emplace();
            string_arg(L, first + 5, "old_key", *args.old_key);
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
        if (lua_type(L, first + 2) == LUA_TTABLE && lua_isnoneornil(L, first + 3)) {
            args.metadata = metadata_arg(L, first + 2);
            args.current_time = time_arg(L, first + 3);
        } else {
            args.metadata = metadata_arg(L, first + 3);
            args.current_time = time_arg(L, first + 2);
        }
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

}  // namespace rsh
