// The native transport's call path: a pooled connection, the per-connection
// handshake (AUTH, SELECT, HELLO), then the operation's round trips.
#pragma once

#include <string>

#include "config.hpp"
#include "operation.hpp"

namespace rsh {

// Runs op over a connection of the pool named pool_name (config.pool_name()).
// Never throws for I/O or Redis failures: they come back as Result::Kind::Error.
Result execute(const Config& config, const std::string& pool_name, Operation& op);

// Closes the idle connections of the pool named pool_name, and each one handed
// back to it later: their server no longer is what they were opened for (a
// demoted master). The pool is never used again.
void retire_pool(const std::string& pool_name);

}  // namespace rsh
