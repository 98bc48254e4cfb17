// Redis Sentinel, sans-I/O: the query a client sends a sentinel to find the
// current master (or the healthy replicas) of a named group, and its answer.
// Both transports drive it (native sockets in sentinel_client.cpp, cosockets
// in lua/resty/session/hiredis/sentinel.lua); the address it yields is then
// served by the single-node path.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "resp.hpp"

namespace rsh {

struct SentinelAddress {
    std::string host;
    int port = 0;
};

struct SentinelAnswer {
    enum class Kind { Address, Replicas, UnknownMaster, Error };
    Kind kind = Kind::Error;
    SentinelAddress address;                // Address
    std::vector<SentinelAddress> replicas;  // Replicas: healthy ones, in the sentinel's order
    std::string error;                      // Error: Redis's text or ours
};

class SentinelQuery {
public:
    enum class Ask { Master, Replicas };

    // credentials are sent (AUTH [username] password) only when `authenticate`
    // is true: on a new connection, or on every call with force_auth.
    SentinelQuery(Ask ask, std::string master_name, std::optional<std::string> username,
                  std::optional<std::string> password, bool authenticate);

    // The request bytes (one write).
    std::string_view request() const { return std::string_view(commands_.bytes()); }
    // Feeds reply bytes; true once every reply is in. Throws ProtocolError.
    bool feed(const char* data, std::size_t len);
    bool finished() const { return answer_.has_value(); }
    // Valid once finished().
    const SentinelAnswer& answer() const { return *answer_; }

private:
    void conclude();

    Ask ask_;
    CommandBuffer commands_;
    bool authenticates_ = false;
    ReplyReader reader_;
    std::vector<ReplyPtr> replies_;
    std::optional<SentinelAnswer> answer_;
};

// The answer to SENTINEL get-master-addr-by-name: [host, port], or nil for a
// name the sentinel does not monitor.
SentinelAnswer parse_master_address(const Reply& reply);
// The healthy replicas from SENTINEL replicas: flags without s_down, o_down or
// disconnected, and master-link-status "ok".
SentinelAnswer parse_replicas(const Reply& reply);

}  // namespace rsh

namespace rsh {

// The pool of connections to one sentinel: its endpoint and the sentinel
// identity (a digest of the password), under the user's `pool` when given.
// Never equal to a data pool name: sentinel and data connections never mix.
std::string sentinel_pool_name(const std::string& host, int port, const std::optional<std::string>& username,
                               const std::optional<std::string>& password,
                               const std::optional<std::string>& custom_pool);

}  // namespace rsh
