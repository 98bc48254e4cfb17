// The core instance userdata: a validated configuration and what is derived
// from it once per change rather than per call.
#pragma once

#include <string>

#include <lua.hpp>

#include "config.hpp"
#include "keys.hpp"
#include "operation.hpp"
#include "stats.hpp"

namespace rsh {

constexpr const char* kInstanceType = "resty.session.hiredis.core.instance";
constexpr const char* kOperationType = "resty.session.hiredis.core.operation";
constexpr const char* kReaderType = "resty.session.hiredis.core.reader";

struct Instance {
    explicit Instance(Config c) { configure(std::move(c)); }

    void configure(Config c) {
        std::string name = c.pool_name();
        KeyNaming keys{c.prefix, c.suffix};
        config = std::move(c);
        pool_name = std::move(name);
        naming = std::move(keys);
    }

    Config config;
    std::string pool_name;
    KeyNaming naming;
    Operation native_op;  // reused by native calls: one runs at a time per Lua state
    // Whether its storage calls are the user's calls, counted in stats: false for
    // the sentinel storage's data instances (the sentinel front counts the call).
    bool metered = true;
};

// A cosocket driver's operation (kOperationType): a call's Operation and the
// meter that times it from op:start to its result or failure.
struct MeteredOperation : Operation {
    MeteredOperation() = default;
    explicit MeteredOperation(Operation&& op) : Operation(std::move(op)) {}
    stats::CallMeter meter;
};

inline Instance* check_instance(lua_State* L, int idx) {
    return static_cast<Instance*>(luaL_checkudata(L, idx, kInstanceType));
}

inline MeteredOperation* check_operation(lua_State* L, int idx) {
    return static_cast<MeteredOperation*>(luaL_checkudata(L, idx, kOperationType));
}

}  // namespace rsh
