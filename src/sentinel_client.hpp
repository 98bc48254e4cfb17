// The native transport's sentinel query: a pooled connection to one sentinel
// (per process, pools apart from data connections), AUTH on new connections
// only (every call with force_auth), one round trip.
#pragma once

#include <optional>
#include <string>

#include "sentinel.hpp"

namespace rsh {

struct SentinelTarget {
    std::string host;
    int port = 26379;
    std::string pool_name;  // sentinel_pool_name(...)
    std::optional<std::string> username, password;
    bool force_auth = false;
    double connect_timeout = 0, send_timeout = 0, read_timeout = 0, keepalive_timeout = 0;
    int pool_size = 30;
};

// Never throws for I/O failures: they come back as an Error answer.
SentinelAnswer ask_sentinel(const SentinelTarget& target, SentinelQuery::Ask ask, const std::string& master_name);

}  // namespace rsh
