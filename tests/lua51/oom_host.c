/* A PUC Lua 5.1 host whose allocator fails on request, for make leak-lua51.
 *
 *   oom_host SCRIPT [ARGS...]
 *
 * The script gets globals fail_after(n): the n-th growing allocation from then on
 * fails (once; 0 disarms), and oom_fired(): whether it did since. Lua then raises
 * "not enough memory" with longjmp, which runs no C++ destructors: under valgrind
 * this shows any C++ object that was alive while the module made a Lua call that
 * allocates.
 *
 * OOM_HOST_KEEP_LOADED=path/to/core.so keeps the module mapped after lua_close, so
 * that its process-lifetime objects (the connection pools) stay reachable. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static long countdown = 0;
static int fired = 0;

static void *allocate(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    /* Lua assumes that shrinking never fails: only growth is refused. */
    if (nsize > osize && countdown > 0 && --countdown == 0) {
        fired = 1;
        return NULL;
    }
    return realloc(ptr, nsize);
}

static int fail_after(lua_State *L) {
    countdown = (long)luaL_checkinteger(L, 1);
    fired = 0;
    return 0;
}

static int oom_fired(lua_State *L) {
    lua_pushboolean(L, fired);
    return 1;
}

static int traceback(lua_State *L) {
    lua_getfield(L, LUA_GLOBALSINDEX, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    const char *keep = getenv("OOM_HOST_KEEP_LOADED");
    if (keep && !dlopen(keep, RTLD_NOW)) {
        fprintf(stderr, "oom_host: %s\n", dlerror());
        return 1;
    }
    lua_State *L = lua_newstate(allocate, NULL);
    if (!L) return 1;
    luaL_openlibs(L);
    lua_register(L, "fail_after", fail_after);
    lua_register(L, "oom_fired", oom_fired);
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; ++i) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    int status = luaL_loadfile(L, argv[1]);
    if (status == 0) status = lua_pcall(L, 0, 0, -2);
    if (status != 0) fprintf(stderr, "oom_host: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == 0 ? 0 : 1;
}
