#include "sentinel_watch.hpp"

namespace rsh {
namespace {

bool is_string(const Reply& reply, std::string_view text) {
    return (reply.type == Reply::Type::String || reply.type == Reply::Type::Status) && reply.str == text;
}

// The first element of a push (["pmessage", pattern, channel, payload] ...).
const Reply* kind_of(const Reply& reply) {
    if (reply.type != Reply::Type::Array || reply.elements.empty()) return nullptr;
    return reply.elements.front().get();
}

}  // namespace

std::string_view SentinelWatch::subscribe(const std::optional<std::string>& username,
                                          const std::optional<std::string>& password) {
    commands_.clear();
    authenticating_ = false;
    if (password) {
        if (username) commands_.add({"AUTH", *username, *password});
        else commands_.add({"AUTH", *password});
        authenticating_ = true;
    }
    commands_.add({"PSUBSCRIBE", "*"});
    subscribed_ = false;
    reader_.emplace();  // (a new one: the old may hold bytes, or have failed)
    return commands_.bytes();
}

std::string_view SentinelWatch::ping() {
    return "*1\r\n$4\r\nPING\r\n";
}

SentinelWatch::Progress SentinelWatch::feed(const char* data, std::size_t len) {
    if (!reader_) throw ProtocolError("protocol error: data from the sentinel before the subscription request");
    reader_->feed(data, len);
    Progress progress;
    while (ReplyPtr reply = reader_->next()) take(*reply, progress);
    return progress;
}

void SentinelWatch::take(const Reply& reply, Progress& progress) {
    if (reply.is_error()) throw WatchRefused(reply.str);
    if (authenticating_) {  // AUTH's +OK
        authenticating_ = false;
        return;
    }
    const Reply* kind = kind_of(reply);
    if (!subscribed_) {
        if (!kind || !is_string(*kind, "psubscribe"))
            throw ProtocolError("protocol error: the sentinel did not confirm the subscription");
        subscribed_ = true;
        return;
    }
    if (kind && is_string(*kind, "pong")) ++progress.pongs;
    else if (is_string(reply, "PONG")) ++progress.pongs;  // (an unsubscribed connection's answer)
    else ++progress.events;  // pmessage, or anything else: a reason to ask again
}

}  // namespace rsh
