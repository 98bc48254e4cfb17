#include "operation.hpp"

#include <cstdlib>

#include "errors.hpp"

namespace rsh {

long parse_redis_version(const std::string& text) {
    long parts[3] = {0, 0, 0};
    const char* p = text.c_str();
    for (int i = 0; i < 3 && *p; ++i) {
        char* end = nullptr;
        parts[i] = std::strtol(p, &end, 10);
        if (end == p) break;
        p = (*end == '.') ? end + 1 : end;
        if (*end != '.') break;
    }
    return parts[0] * 10000 + parts[1] * 100 + parts[2];
}

Operation Operation::set(const KeyNaming& naming, SetArgs args) {
    Kind kind = (args.old_key || args.metadata) ? Kind::SetTransaction : Kind::SetPlain;
    Operation op(kind, naming);
    op.set_ = std::move(args);
    return op;
}

Operation Operation::get(const KeyNaming& naming, const GetArgs& args) {
    Operation op(Kind::Get, naming);
    op.get_ = args;
    return op;
}

Operation Operation::remove(const KeyNaming& naming, const DeleteArgs& args) {
    Operation op(args.metadata ? Kind::DeleteTransaction : Kind::DeletePlain, naming);
    op.delete_ = args;
    return op;
}

Operation Operation::read_metadata(const KeyNaming& naming, const ReadMetadataArgs& args) {
    Operation op(Kind::ReadMetadata, naming);
    op.read_ = args;
    return op;
}

std::optional<Operation> Operation::handshake(const HandshakeArgs& args) {
    if (!args.password && !args.database && !args.hello) return std::nullopt;
    Operation op(Kind::Handshake, KeyNaming{});
    op.handshake_ = args;
    return op;
}

std::optional<std::string> Operation::next_request(long server_version) {
    if (finished_ || expected_replies_ != 0) return std::nullopt;
    if (stage_ == Stage::Start) {
        server_version_ = server_version;
        if (kind_ == Kind::SetTransaction && set_.old_key && server_version_ < kRedis7) {
            // Redis < 7 has no EXPIRE ... LT: ask for the old key's TTL first (upstream's way).
            commands_.add({"TTL", naming_.session_key(set_.name, *set_.old_key)});
            stage_ = Stage::OldKeyTtl;
        } else {
            build_main(std::nullopt);
        }
    }
    if (commands_.count() == 0) return std::nullopt;
    expected_replies_ = commands_.count();
    replies_.clear();
    return commands_.take();
}

void Operation::build_main(std::optional<long long> old_ttl) {
    stage_ = Stage::Main;
    const bool redis7 = server_version_ >= kRedis7;
    switch (kind_) {
    case Kind::SetPlain:
        commands_.add({"SET", naming_.session_key(set_.name, set_.key), set_.value, "EX",
                       std::to_string(set_.ttl)});
        break;
    case Kind::SetTransaction: {
        const std::string ttl = std::to_string(set_.ttl);
        commands_.add({"MULTI"});
        commands_.add({"SET", naming_.session_key(set_.name, set_.key), set_.value, "EX", ttl});
        if (set_.old_key) {
            const std::string old_name = naming_.session_key(set_.name, *set_.old_key);
            const std::string stale = std::to_string(set_.stale_ttl);
            if (redis7) {
                commands_.add({"EXPIRE", old_name, stale, "LT"});
            } else if (old_ttl && *old_ttl > set_.stale_ttl) {
                commands_.add({"EXPIRE", old_name, stale});
            }
        }
        if (set_.metadata) {
            const std::string score = format_number(set_.current_time - 1);
            const std::string new_score = format_number(set_.current_time + static_cast<double>(set_.ttl));
            for (const auto& [audience, subject] : set_.metadata->entries) {
                const std::string meta = naming_.metadata_key(set_.name, audience, subject);
                commands_.add({"ZREMRANGEBYSCORE", meta, "0", score});
                commands_.add({"ZADD", meta, new_score, set_.key});
                if (set_.old_key) commands_.add({"ZREM", meta, *set_.old_key});
                if (redis7) {
                    // Never shorten the zset's life: a short session must not expire long ones.
                    commands_.add({"EXPIRE", meta, ttl, "NX"});
                    commands_.add({"EXPIRE", meta, ttl, "GT"});
                } else {
                    commands_.add({"EXPIRE", meta, ttl});
                }
            }
        }
        commands_.add({"EXEC"});
        break;
    }
    case Kind::Get:
        commands_.add({"GET", naming_.session_key(get_.name, get_.key)});
        break;
    case Kind::DeletePlain:
        commands_.add({"UNLINK", naming_.session_key(delete_.name, delete_.key)});
        break;
    case Kind::DeleteTransaction: {
        const std::string score = format_number(delete_.current_time - 1);
        commands_.add({"MULTI"});
        commands_.add({"UNLINK", naming_.session_key(delete_.name, delete_.key)});
        for (const auto& [audience, subject] : delete_.metadata->entries) {
            const std::string meta = naming_.metadata_key(delete_.name, audience, subject);
            commands_.add({"ZREMRANGEBYSCORE", meta, "0", score});
            commands_.add({"ZREM", meta, delete_.key});
        }
        commands_.add({"EXEC"});
        break;
    }
    case Kind::ReadMetadata:
        commands_.add({"ZRANGEBYSCORE", naming_.metadata_key(read_.name, read_.audience, read_.subject),
                       format_number(read_.current_time), "+inf", "WITHSCORES"});
        break;
    case Kind::Handshake:
        if (handshake_.password) {
            if (handshake_.username) {
                commands_.add({"AUTH", *handshake_.username, *handshake_.password});
            } else {
                commands_.add({"AUTH", *handshake_.password});
            }
        }
        if (handshake_.database) commands_.add({"SELECT", std::to_string(*handshake_.database)});
        if (handshake_.hello) commands_.add({"HELLO", "2"});
        break;
    }
}

bool Operation::feed(const char* data, std::size_t len) {
    if (expected_replies_ == 0) throw ProtocolError("protocol error: unexpected data from the server");
    if (len > 0) received_bytes_ = true;
    reader_.feed(data, len);
    while (replies_.size() < expected_replies_) {
        ReplyPtr reply = reader_.next();
        if (!reply) return false;
        replies_.push_back(std::move(reply));
    }
    if (reader_.has_pending_bytes()) {
        throw ProtocolError("protocol error: unexpected data after the reply");
    }
    expected_replies_ = 0;
    complete_round();
    return true;
}

void Operation::restart() {
    stage_ = Stage::Start;
    commands_ = CommandBuffer{};
    expected_replies_ = 0;
    replies_.clear();
    reader_ = ReplyReader{limits_};
    finished_ = false;
    received_bytes_ = false;
    result_ = Result{};
}

void Operation::set_reader_limits(const ReaderLimits& limits) {
    limits_ = limits;
    reader_ = ReplyReader{limits_};
}

void Operation::finish(Result result) {
    result_ = std::move(result);
    finished_ = true;
}

// MULTI, QUEUED..., EXEC: the first error reply anywhere (queueing or execution) wins.
Result Operation::transaction_result() const {
    for (const auto& reply : replies_) {
        if (reply->is_error()) return Result::error(reply->str);
    }
    const Reply& exec = *replies_.back();
    if (exec.type == Reply::Type::Nil) return Result::error("transaction aborted");
    if (exec.type != Reply::Type::Array) return Result::error("unexpected reply to EXEC");
    for (const auto& element : exec.elements) {
        if (element && element->is_error()) return Result::error(element->str);
    }
    return Result{};
}

void Operation::complete_round() {
    if (stage_ == Stage::OldKeyTtl) {
        const Reply& ttl = *replies_.front();
        if (ttl.is_error()) return finish(Result::error(ttl.str));
        if (ttl.type != Reply::Type::Integer) return finish(Result::error("unexpected reply to TTL"));
        build_main(ttl.integer);
        return;  // the transaction is the next round trip
    }

    const Reply& first = *replies_.front();
    Result result;
    switch (kind_) {
    case Kind::SetPlain:
    case Kind::DeletePlain:
        if (first.is_error()) result = Result::error(first.str);
        break;
    case Kind::SetTransaction:
    case Kind::DeleteTransaction:
        result = transaction_result();
        break;
    case Kind::Get:
        if (first.is_error()) {
            result = Result::error(first.str);
        } else if (first.type == Reply::Type::Nil) {
            result.kind = Result::Kind::Nil;
        } else if (first.type == Reply::Type::String) {
            result.kind = Result::Kind::String;
            result.text = first.str;
        } else {
            result = Result::error("unexpected reply to GET");
        }
        break;
    case Kind::ReadMetadata:
        if (first.is_error()) {
            result = Result::error(first.str);
        } else if (first.type != Reply::Type::Array || first.elements.size() % 2 != 0) {
            result = Result::error("unexpected reply to ZRANGEBYSCORE");
        } else {
            result.kind = Result::Kind::Map;
            for (std::size_t i = 0; i + 1 < first.elements.size(); i += 2) {
                const Reply& member = *first.elements[i];
                const Reply& score = *first.elements[i + 1];
                if (member.type != Reply::Type::String || score.type != Reply::Type::String) {
                    result = Result::error("unexpected reply to ZRANGEBYSCORE");
                    break;
                }
                result.map.emplace_back(member.str, score.str);
            }
        }
        break;
    case Kind::Handshake: {
        result.kind = Result::Kind::Version;
        std::size_t at = 0;
        // AUTH and SELECT failures end the call; a refused HELLO (Redis < 6, or
        // an ACL without it) only means the version stays unknown.
        std::size_t checked = replies_.size() - (handshake_.hello ? 1 : 0);
        for (; at < checked; ++at) {
            if (replies_[at]->is_error()) return finish(Result::error(replies_[at]->str));
        }
        if (handshake_.hello && replies_.back()->type == Reply::Type::Array) {
            const auto& fields = replies_.back()->elements;
            for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
                if (fields[i]->str == "version") result.version = parse_redis_version(fields[i + 1]->str);
            }
        }
        break;
    }
    }
    finish(std::move(result));
}

}  // namespace rsh
