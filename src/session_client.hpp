// The native transport's call path: a pooled connection, the per-connection
// handshake (AUTH, SELECT, HELLO), then the operation's round trips.
#pragma once

#include "config.hpp"
#include "operation.hpp"

namespace rsh {

// Runs op over a connection of config's pool. Never throws for I/O or Redis
// failures: they come back as Result::Kind::Error.
Result execute(const Config& config, Operation& op);

}  // namespace rsh
