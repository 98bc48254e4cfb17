// A subscription to one sentinel's events, sans-I/O: the request that
// subscribes to every event channel, then the bytes the sentinel sends, read as
// they come (its confirmation, the events it publishes, the answers to liveness
// PINGs). The Lua driver (sentinel_watch.lua) moves the bytes; what an event
// means for routing is its business: any event is a reason to ask again.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "errors.hpp"
#include "resp.hpp"

namespace rsh {

// An error reply to AUTH or PSUBSCRIBE (a wrong password, an ACL user without
// the channel permission): the subscription cannot be made on this connection,
// which is to be closed.
struct WatchRefused : IoError {
    using IoError::IoError;
};

class SentinelWatch {
public:
    // The request bytes (one write): AUTH when a password is given, then
    // PSUBSCRIBE * (sentinels publish each event on a channel named after it).
    // Starts over: bytes fed before are forgotten.
    std::string_view subscribe(const std::optional<std::string>& username, const std::optional<std::string>& password);

    // A PING's bytes: answered ["pong", ""] on a subscribed connection, in order
    // with the events (its answer proves the connection carries them still).
    static std::string_view ping();

    struct Progress {
        std::size_t events = 0;  // messages published on a subscribed channel
        std::size_t pongs = 0;   // answers to ping()
    };
    // Feeds bytes; counts what they completed. Throws WatchRefused on an error
    // reply and ProtocolError on bytes that are not what a sentinel sends.
    Progress feed(const char* data, std::size_t len);

    // Whether the sentinel confirmed the subscription: every event it publishes
    // from then on reaches this connection.
    bool subscribed() const { return subscribed_; }

private:
    void take(const Reply& reply, Progress& progress);

    CommandBuffer commands_;
    std::optional<ReplyReader> reader_;
    bool authenticating_ = false;
    bool subscribed_ = false;
};

}  // namespace rsh
