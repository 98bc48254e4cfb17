// What a connection's Redis session has been set up as, and the handshake
// (AUTH, SELECT, HELLO) that brings it to what a configuration asks for.
// Shared by the native transport (state tracked per connection) and the
// cosocket driver (state assumed from getreusedtimes()).
#pragma once

#include <string>

#include "config.hpp"
#include "operation.hpp"

namespace rsh {

struct SessionState {
    std::string authenticated_as;  // identity (username, password) AUTHed with; "" = none
    long long database = 0;        // Redis starts every connection on 0
    bool greeted = false;          // HELLO answered: server_version is known
    long server_version = 0;

    // A pooled connection as the cosocket driver must assume it: set up by a
    // configuration of the same pool, hence (default pool names) the same identity.
    static SessionState pooled_for(const Config& config);

    // Records a successful handshake built by handshake_args(config, *this).
    void apply(const Config& config, const HandshakeArgs& sent, const Result& result);
};

// AUTH when the session is not authenticated as config says (every call with
// force_auth), SELECT when on another database, HELLO 2 until greeted, and
// ROLE with it when the configuration expects a role.
HandshakeArgs handshake_args(const Config& config, const SessionState& state);

}  // namespace rsh
