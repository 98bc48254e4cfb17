#include "sentinel.hpp"

#include <cstdlib>

#include "errors.hpp"

namespace rsh {
namespace {

bool valid_port(const std::string& text, int& port) {
    char* end = nullptr;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || value < 1 || value > 65535) return false;
    port = static_cast<int>(value);
    return true;
}

SentinelAnswer failure(std::string message) {
    SentinelAnswer answer;
    answer.kind = SentinelAnswer::Kind::Error;
    answer.error = std::move(message);
    return answer;
}

// A field of one replica's flat [name, value, name, value...] array.
const std::string* field(const Reply& entry, std::string_view name) {
    for (std::size_t i = 0; i + 1 < entry.elements.size(); i += 2) {
        if (entry.elements[i]->str == name) return &entry.elements[i + 1]->str;
    }
    return nullptr;
}

bool has_flag(const std::string& flags, std::string_view flag) {
    std::size_t start = 0;
    while (start <= flags.size()) {
        std::size_t end = flags.find(',', start);
        if (end == std::string::npos) end = flags.size();
        if (std::string_view(flags).substr(start, end - start) == flag) return true;
        start = end + 1;
    }
    return false;
}

}  // namespace

SentinelQuery::SentinelQuery(Ask ask, std::string master_name, std::optional<std::string> username,
                             std::optional<std::string> password, bool authenticate)
    : ask_(ask) {
    if (authenticate && password) {
        if (username) commands_.add({"AUTH", *username, *password});
        else commands_.add({"AUTH", *password});
        authenticates_ = true;
    }
    commands_.add({"SENTINEL", ask == Ask::Master ? "get-master-addr-by-name" : "replicas", master_name});
}

bool SentinelQuery::feed(const char* data, std::size_t len) {
    if (answer_) throw ProtocolError("protocol error: unexpected data from the sentinel");
    reader_.feed(data, len);
    while (replies_.size() < commands_.count()) {
        ReplyPtr reply = reader_.next();
        if (!reply) return false;
        replies_.push_back(std::move(reply));
    }
    if (reader_.has_pending_bytes()) throw ProtocolError("protocol error: unexpected data from the sentinel");
    conclude();
    return true;
}

void SentinelQuery::conclude() {
    if (authenticates_ && replies_.front()->is_error()) {
        answer_ = failure(replies_.front()->str);
        return;
    }
    const Reply& reply = *replies_.back();
    answer_ = ask_ == Ask::Master ? parse_master_address(reply) : parse_replicas(reply);
}

SentinelAnswer parse_master_address(const Reply& reply) {
    if (reply.is_error()) return failure(reply.str);
    SentinelAnswer answer;
    if (reply.type == Reply::Type::Nil) {
        answer.kind = SentinelAnswer::Kind::UnknownMaster;
        return answer;
    }
    if (reply.type != Reply::Type::Array || reply.elements.size() != 2 ||
        reply.elements[0]->type != Reply::Type::String || reply.elements[0]->str.empty() ||
        !valid_port(reply.elements[1]->str, answer.address.port)) {
        return failure("unexpected reply to SENTINEL get-master-addr-by-name");
    }
    answer.kind = SentinelAnswer::Kind::Address;
    answer.address.host = reply.elements[0]->str;
    return answer;
}

SentinelAnswer parse_replicas(const Reply& reply) {
    if (reply.is_error()) return failure(reply.str);
    if (reply.type != Reply::Type::Array) return failure("unexpected reply to SENTINEL replicas");
    SentinelAnswer answer;
    answer.kind = SentinelAnswer::Kind::Replicas;
    for (const auto& entry : reply.elements) {
        if (entry->type != Reply::Type::Array) return failure("unexpected reply to SENTINEL replicas");
        const std::string* ip = field(*entry, "ip");
        const std::string* port = field(*entry, "port");
        const std::string* flags = field(*entry, "flags");
        const std::string* link = field(*entry, "master-link-status");
        SentinelAddress address;
        if (!ip || ip->empty() || !port || !valid_port(*port, address.port)) continue;
        if (flags && (has_flag(*flags, "s_down") || has_flag(*flags, "o_down") ||
                      has_flag(*flags, "disconnected"))) {
            continue;
        }
        if (link && *link != "ok") continue;
        address.host = *ip;
        answer.replicas.push_back(std::move(address));
    }
    return answer;
}

}  // namespace rsh

#include "config.hpp"

namespace rsh {

std::string sentinel_pool_name(const std::string& host, int port, const std::optional<std::string>& username,
                               const std::optional<std::string>& password,
                               const std::optional<std::string>& custom_pool) {
    Config identity;
    identity.host = host;
    identity.port = port;
    identity.username = username;
    identity.password = password;
    std::string name = "sentinel|";
    if (custom_pool) name += *custom_pool + "|";
    return name + identity.pool_name();
}

}  // namespace rsh
