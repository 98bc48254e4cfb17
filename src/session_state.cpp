#include "session_state.hpp"

namespace rsh {
namespace {

std::string identity_of(const Config& config) {
    if (!config.password) return "";
    return config.username.value_or("") + '\n' + *config.password;
}

}  // namespace

SessionState SessionState::pooled_for(const Config& config) {
    SessionState state;
    state.authenticated_as = identity_of(config);
    state.database = config.database.value_or(0);
    state.greeted = true;
    return state;
}

HandshakeArgs handshake_args(const Config& config, const SessionState& state) {
    HandshakeArgs args;
    if (config.password && (state.authenticated_as != identity_of(config) || config.force_auth.value_or(false))) {
        args.username = config.username;
        args.password = config.password;
    }
    const long long database = config.database.value_or(0);
    if (database != state.database) args.database = database;
    args.hello = !state.greeted;
    if (config.role && !state.greeted) args.role = config.role;  // once per new connection
    return args;
}

void SessionState::apply(const Config& config, const HandshakeArgs& sent, const Result& result) {
    if (sent.password) authenticated_as = identity_of(config);
    if (sent.database) database = *sent.database;
    if (sent.hello) {
        greeted = true;
        server_version = result.version;
    }
}

}  // namespace rsh
