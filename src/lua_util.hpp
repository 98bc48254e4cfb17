// Lua C API helpers: the exception barrier, protected pushes and typed reads.
//
// A Lua error must not pass live C++ objects: PUC Lua raises with longjmp, which runs
// no destructors (LuaJIT unwinds C++ frames, PUC Lua leaks). So in a lua_CFunction:
// Lua calls that may raise (metamethods, anything that allocates) run before the
// first C++ object exists; while C++ objects are alive, Lua is read only with calls
// that never raise (types checked first), and values are pushed through
// protected_push; C++ exceptions become Lua results in lua_barrier.
#pragma once

#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <lua.hpp>

namespace rsh {

// A Lua error (out of memory) caught by protected_push.
struct LuaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {
struct PushCall {
    int (*run)(lua_State*, void*);
    void* push;
};
inline char protected_push_key;  // its address keys protected_push_entry in the registry
inline int protected_push_entry(lua_State* L) {
    auto* call = static_cast<PushCall*>(lua_touserdata(L, 1));
    lua_pop(L, 1);
    return call->run(L, call->push);
}
}  // namespace detail

// Once, from luaopen: protected_push then pushes nothing that allocates outside its pcall.
inline void register_protected_push(lua_State* L) {
    lua_pushlightuserdata(L, &detail::protected_push_key);
    lua_pushcfunction(L, detail::protected_push_entry);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

// Runs push(L) (Lua pushes only; it must not throw) inside lua_pcall, so a memory error
// comes back here, as LuaError, instead of a longjmp past the caller's C++ objects.
// Returns the number of values push left on the stack. Needs 2 free stack slots.
template <class Push>
int protected_push(lua_State* L, Push&& push) {
    using PushType = std::remove_reference_t<Push>;
    detail::PushCall call{[](lua_State* state, void* p) { return (*static_cast<PushType*>(p))(state); },
                          static_cast<void*>(&push)};
    const int base = lua_gettop(L);
    lua_pushlightuserdata(L, &detail::protected_push_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &call);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
        const char* message = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "Lua error";
        LuaError error(message);
        lua_settop(L, base);
        throw error;
    }
    return lua_gettop(L) - base;
}

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

// Userdata holding a C++ object: placement-new'd, destroyed by __gc. The memory
// comes from a protected push (args are usually live C++ objects); the metatable is
// set once the object exists, so a throwing constructor leaves plain garbage.
template <class T, class... Args>
T* push_object(lua_State* L, const char* metatable, Args&&... args) {
    void* memory = nullptr;
    protected_push(L, [&](lua_State* state) {
        memory = lua_newuserdata(state, sizeof(T));
        luaL_getmetatable(state, metatable);
        return 2;
    });
    T* object = new (memory) T(std::forward<Args>(args)...);
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
