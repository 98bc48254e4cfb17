// Lua C API helpers: the exception barrier and typed reads that never raise
// (a Lua error must not unwind through live C++ objects).
#pragma once

#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include <lua.hpp>

namespace rsh {

enum class OnError { ReturnNilErr, Raise };

// Runs body (which returns the number of Lua results); a C++ exception becomes
// `nil, message` or a Lua error raised after every C++ local is gone.
template <class Body>
int lua_barrier(lua_State* L, OnError mode, Body&& body) {
    char message[1024];
    try {
        return body();
    } catch (const std::bad_alloc&) {
        std::strcpy(message, "out of memory");
    } catch (const std::exception& e) {
        std::strncpy(message, e.what(), sizeof message - 1);
        message[sizeof message - 1] = '\0';
    }
    if (mode == OnError::Raise) {
        lua_pushstring(L, message);  // no position: the Lua wrapper blames its caller
        return lua_error(L);
    }
    lua_pushnil(L);
    lua_pushstring(L, message);
    return 2;
}

inline std::string to_string(lua_State* L, int idx) {
    std::size_t len = 0;
    const char* s = lua_tolstring(L, idx, &len);
    return std::string(s, len);
}

// Userdata holding a C++ object: placement-new'd, destroyed by __gc.
template <class T, class... Args>
T* push_object(lua_State* L, const char* metatable, Args&&... args) {
    void* memory = lua_newuserdata(L, sizeof(T));
    T* object = new (memory) T(std::forward<Args>(args)...);
    luaL_getmetatable(L, metatable);
    lua_setmetatable(L, -2);
    return object;
}

template <class T>
int gc_object(lua_State* L) {
    static_cast<T*>(lua_touserdata(L, 1))->~T();
    return 0;
}

// Registers the metatable of a userdata type holding a T: the methods as
// __index, the destructor as __gc.
template <class T>
void register_type(lua_State* L, const char* metatable, const luaL_Reg* methods) {
    luaL_newmetatable(L, metatable);
    lua_newtable(L);
    luaL_register(L, nullptr, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc_object<T>);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

}  // namespace rsh
