// The native transport's sentinel lookup: one round to every sentinel asked
// (all requests sent, then the answers read), over pooled connections (per
// process, pools apart from data connections), AUTH on new connections only
// (every call with force_auth); during a failover, one more query to its leader.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sentinel.hpp"

namespace rsh {

struct SentinelTarget {
    std::string host;
    int port = 26379;
    std::string pool_name;  // sentinel_pool_name(...)
    std::optional<std::string> username, password;
    bool force_auth = false;
    bool ssl = false;   // TLS to this sentinel, with these settings
    TlsSettings tls;
    bool retry = false;  // failed lately: asked last, within the round's retry budget
    double connect_timeout = 0, send_timeout = 0, read_timeout = 0, keepalive_timeout = 0;
    int pool_size = 30;
};

struct SentinelLookup {
    // Master (address), Replicas, UnknownMaster or NoAnswer (error); never AskPromoted.
    SentinelChoice choice;
    // The address is the replica that a failover in progress promotes (it may
    // still be a replica: the caller's ROLE check tells).
    bool promoted = false;
    // Per target: empty when it answered, else why not.
    std::vector<std::string> failures;
};

// Never throws for I/O failures: they are in failures and the choice.
SentinelLookup ask_sentinels(const std::vector<SentinelTarget>& targets, SentinelQuery::Ask ask,
                             const std::string& master_name);

}  // namespace rsh
