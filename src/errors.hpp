// Error types shared by the transport, the pool and the codec. Each carries
// the exact text that reaches Lua as the second return value (`nil, err`).
#pragma once

#include <stdexcept>
#include <string>

namespace rsh {

// A failure on the wire: the connection that raised it must be closed, never pooled.
struct IoError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The peer sent bytes that are not a valid reply (or over our limits).
struct ProtocolError : IoError {
    using IoError::IoError;
};

// A caller mistake detected before anything is sent ("invalid <arg>: <why>").
struct ArgumentError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Throws ArgumentError("invalid <what>: <why>"), the form of every rejection.
[[noreturn]] inline void invalid(const std::string& what, const std::string& why) {
    throw ArgumentError("invalid " + what + ": " + why);
}

}  // namespace rsh
