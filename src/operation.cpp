#include "operation.hpp"

#include <cstdlib>
#include <new>
#include <stdexcept>

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

namespace {

// HELLO 2 answers a flat array of field, value pairs; "version" is the one we need.
long hello_version(const Reply& hello) {
    if (hello.type != Reply::Type::Array) return 0;
    const auto& fields = hello.elements;
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i]->str == "version") return parse_redis_version(fields[i + 1]->str);
    }
    return 0;
}

// ROLE answers [role, ...]; "" when unreadable.
std::string role_of(const Reply& reply) {
    if (reply.type != Reply::Type::Array || reply.elements.empty()) return "";
    return reply.elements[0]->str;
}

}  // namespace

void add_wait(CommandBuffer& out, const Durability& durability) {
    if (!durability.enabled()) return;
    out.add({"WAIT", NumberText(static_cast<double>(durability.replicas)).view(),
             NumberText(static_cast<double>(durability.timeout_ms)).view()});
}

std::optional<std::string> wait_shortfall(const Reply& reply, const Durability& durability) {
    if (reply.is_error()) return reply.str;
    if (reply.type != Reply::Type::Integer) return std::string("unexpected reply to WAIT");
    if (reply.integer >= durability.replicas) return std::nullopt;
    return "write not durable: " + std::to_string(reply.integer) + " of " + std::to_string(durability.replicas) +
           " replicas (wait_replicas) acknowledged it within " + std::to_string(durability.timeout_ms) +
           " ms (wait_timeout)";
}

void Operation::begin(Kind kind, const KeyNaming* naming) {
    kind_ = kind;
    if (naming) naming_ = *naming;
    stage_ = Stage::Start;
    server_version_ = 0;
    commands_.clear();
    prefixed_.clear();
    expected_replies_ = 0;
    handshake_replies_ = 0;
    replies_.clear();
    // A reader that failed, holds bytes beyond a reply or stopped inside one
    // (hiredis may have consumed an array header) cannot serve another call.
    if (reader_.failed() || reader_.has_pending_bytes() || !reader_.between_replies()) reader_ = ReplyReader{limits_};
    finished_ = false;
    received_bytes_ = false;
    handshake_failed_ = false;
    learned_version_ = 0;
    result_.kind = Result::Kind::Ok;
    result_.text.clear();
    result_.version = 0;  // (the map keeps its pairs for the next read_metadata: see read_score_map)
}

void Operation::keep_old_key() {
    if (set_.old_key) spare_old_key_.swap(*set_.old_key);
    set_.old_key.reset();
}

void Operation::keep_metadata(std::optional<Metadata>& metadata) {
    if (metadata) spare_metadata_.entries.swap(metadata->entries);
    metadata.reset();
}

std::string& Operation::emplace_old_key() {
    spare_old_key_.clear();
    return set_.old_key.emplace(std::move(spare_old_key_));
}

Metadata& Operation::emplace_metadata(std::size_t count) {
    auto& metadata = kind_ == Kind::Delete ? delete_.metadata : set_.metadata;
    metadata.emplace(std::move(spare_metadata_));
    metadata->entries.resize(count);
    return *metadata;
}

SetArgs& Operation::start_set(const KeyNaming& naming) {
    begin(Kind::Set, &naming);
    keep_old_key();
    keep_metadata(set_.metadata);
    set_.current_time = 0;
    set_.stale_ttl = 0;
    return set_;
}

GetArgs& Operation::start_get(const KeyNaming& naming) {
    begin(Kind::Get, &naming);
    return get_;
}

DeleteArgs& Operation::start_delete(const KeyNaming& naming) {
    begin(Kind::Delete, &naming);
    keep_metadata(delete_.metadata);
    delete_.current_time = 0;
    return delete_;
}

ReadMetadataArgs& Operation::start_read_metadata(const KeyNaming& naming) {
    begin(Kind::ReadMetadata, &naming);
    return read_;
}

void Operation::start_raw(const CommandBuffer& commands) {
    begin(Kind::Raw, nullptr);
    raw_.clear();
    raw_.append(commands);
}

Operation Operation::set(const KeyNaming& naming, SetArgs args) {
    Operation op;
    op.start_set(naming) = std::move(args);
    return op;
}

Operation Operation::get(const KeyNaming& naming, const GetArgs& args) {
    Operation op;
    op.start_get(naming) = args;
    return op;
}

Operation Operation::remove(const KeyNaming& naming, const DeleteArgs& args) {
    Operation op;
    op.start_delete(naming) = args;
    return op;
}

Operation Operation::read_metadata(const KeyNaming& naming, const ReadMetadataArgs& args) {
    Operation op;
    op.start_read_metadata(naming) = args;
    return op;
}

std::optional<Operation> Operation::handshake(const HandshakeArgs& args) {
    if (args.sends_nothing()) return std::nullopt;
    Operation op;
    op.begin(Kind::Handshake, nullptr);
    op.handshake_ = args;
    return op;
}

// The write's round trip ends with WAIT (not the TTL lookup before it).
bool Operation::waits() const {
    return durability_.enabled() && stage_ == Stage::Main && (kind_ == Kind::Set || kind_ == Kind::Delete);
}

bool Operation::is_transaction() const {
    switch (kind_) {
    case Kind::Set: return set_.old_key || set_.metadata;
    case Kind::Delete: return delete_.metadata.has_value();
    default: return false;
    }
}

std::optional<std::string_view> Operation::next_request(long server_version) {
    if (finished_ || expected_replies_ != 0) return std::nullopt;
    if (stage_ == Stage::Start) {
        server_version_ = server_version;
        commands_.clear();
        if (kind_ == Kind::Set && set_.old_key && server_version_ < kRedis7) {
            // Redis < 7 has no EXPIRE ... LT: ask for the old key's TTL first (upstream's way).
            naming_.session_key_into(key_, set_.name, *set_.old_key);
            commands_.add({"TTL", key_});
            stage_ = Stage::OldKeyTtl;
        } else {
            build_main(std::nullopt);
        }
    }
    if (commands_.count() == 0) return std::nullopt;
    expected_replies_ = commands_.count();
    replies_.clear();
    return std::string_view(commands_.bytes());
}

void Operation::add_handshake_commands(CommandBuffer& out, const HandshakeArgs& args) const {
    if (args.password) {
        if (args.username) {
            out.add({"AUTH", *args.username, *args.password});
        } else {
            out.add({"AUTH", *args.password});
        }
    }
    if (args.database) out.add({"SELECT", NumberText(static_cast<double>(*args.database)).view()});
    if (args.role) out.add({"ROLE"});
    if (args.hello) out.add({"HELLO", "2"});
}

std::string_view Operation::prefix_handshake(const HandshakeArgs& args) {
    if (expected_replies_ == 0 || received_bytes_ || handshake_replies_ != 0) {
        throw std::logic_error("prefix_handshake: no round trip waiting to be sent");
    }
    prefixed_.clear();
    add_handshake_commands(prefixed_, args);
    handshake_replies_ = prefixed_.count();
    prefixed_handshake_ = args;
    expected_replies_ += handshake_replies_;
    // prefixed_ = handshake + the round trip; it becomes the round trip.
    CommandBuffer round = std::move(commands_);
    prefixed_.append(round);
    commands_ = std::move(prefixed_);
    prefixed_ = std::move(round);
    return std::string_view(commands_.bytes());
}

void Operation::build_main(std::optional<long long> old_ttl) {
    stage_ = Stage::Main;
    commands_.clear();
    const bool redis7 = server_version_ >= kRedis7;
    switch (kind_) {
    case Kind::Set: {
        const NumberText ttl(static_cast<double>(set_.ttl));
        naming_.session_key_into(key_, set_.name, set_.key);
        if (set_.value.size() >= kSeparateValue) commands_.mark(set_.value);
        if (!is_transaction()) {
            commands_.add({"SET", key_, set_.value, "EX", ttl.view()});
            add_wait(commands_, durability_);
            break;
        }
        commands_.add({"MULTI"});
        commands_.add({"SET", key_, set_.value, "EX", ttl.view()});
        if (set_.old_key) {
            naming_.session_key_into(key_, set_.name, *set_.old_key);
            const NumberText stale(static_cast<double>(set_.stale_ttl));
            if (redis7) {
                commands_.add({"EXPIRE", key_, stale.view(), "LT"});
            } else if (old_ttl && *old_ttl > set_.stale_ttl) {
                commands_.add({"EXPIRE", key_, stale.view()});
            }
        }
        if (set_.metadata) {
            const NumberText score(set_.current_time - 1);
            const NumberText new_score(set_.current_time + static_cast<double>(set_.ttl));
            for (const auto& [audience, subject] : set_.metadata->entries) {
                naming_.metadata_key_into(meta_key_, set_.name, audience, subject);
                commands_.add({"ZREMRANGEBYSCORE", meta_key_, "0", score.view()});
                commands_.add({"ZADD", meta_key_, new_score.view(), set_.key});
                if (set_.old_key) commands_.add({"ZREM", meta_key_, *set_.old_key});
                // Never shorten the zset's life: a short session must not expire long ones.
                ttl_script::add_extend([&](std::initializer_list<std::string_view> args) { commands_.add(args); },
                                       meta_key_, ttl.view(), redis7);
            }
        }
        commands_.add({"EXEC"});
        add_wait(commands_, durability_);
        break;
    }
    case Kind::Get:
        naming_.session_key_into(key_, get_.name, get_.key);
        commands_.add({"GET", key_});
        break;
    case Kind::Delete: {
        naming_.session_key_into(key_, delete_.name, delete_.key);
        if (!is_transaction()) {
            commands_.add({"UNLINK", key_});
            add_wait(commands_, durability_);
            break;
        }
        const NumberText score(delete_.current_time - 1);
        commands_.add({"MULTI"});
        commands_.add({"UNLINK", key_});
        for (const auto& [audience, subject] : delete_.metadata->entries) {
            naming_.metadata_key_into(meta_key_, delete_.name, audience, subject);
            commands_.add({"ZREMRANGEBYSCORE", meta_key_, "0", score.view()});
            commands_.add({"ZREM", meta_key_, delete_.key});
        }
        commands_.add({"EXEC"});
        add_wait(commands_, durability_);
        break;
    }
    case Kind::ReadMetadata:
        naming_.metadata_key_into(meta_key_, read_.name, read_.audience, read_.subject);
        commands_.add({"ZRANGEBYSCORE", meta_key_, NumberText(read_.current_time).view(), "+inf", "WITHSCORES"});
        break;
    case Kind::Handshake:
        add_handshake_commands(commands_, handshake_);
        break;
    case Kind::Raw:
        commands_.append(raw_);
        break;
    }
}

bool Operation::feed(const char* data, std::size_t len) {
    if (expected_replies_ == 0) throw ProtocolError("protocol error: unexpected data from the server");
    if (len > 0) received_bytes_ = true;
    reader_.feed(data, len);
    if (!take_replies(reader_)) return false;
    if (reader_.has_pending_bytes()) {
        throw ProtocolError("protocol error: unexpected data after the reply");
    }
    return true;
}

bool Operation::take_replies(ReplyReader& reader) {
    if (expected_replies_ == 0) throw ProtocolError("protocol error: unexpected data from the server");
    while (replies_.size() < expected_replies_) {
        ReplyPtr reply = reader.next();
        if (!reply) return false;
        received_bytes_ = true;
        replies_.push_back(std::move(reply));
    }
    expected_replies_ = 0;
    if (handshake_replies_ != 0) {
        std::optional<Result> refused = check_handshake_replies();
        if (refused) {
            handshake_failed_ = true;
            finish(std::move(*refused));
            return true;
        }
        replies_.erase(replies_.begin(), replies_.begin() + static_cast<std::ptrdiff_t>(handshake_replies_));
        handshake_replies_ = 0;
    }
    complete_round();
    return true;
}

// The prefixed handshake's replies (the first ones of the round): AUTH and SELECT
// failures end the call, and so does a server in another role than expected
// (a sentinel's stale answer); a refused HELLO (Redis < 6, or an ACL without
// it) only means the version stays unknown.
std::optional<Result> Operation::check_handshake_replies() {
    const bool hello = prefixed_handshake_.hello;
    const std::size_t checked = handshake_replies_ - (hello ? 1 : 0);
    for (std::size_t at = 0; at < checked; ++at) {
        if (replies_[at]->is_error()) return Result::error(replies_[at]->str);
    }
    if (const auto& expected = prefixed_handshake_.role) {
        const std::string actual = role_of(*replies_[checked - 1]);
        if (actual != *expected) {
            return Result::error("role mismatch: expected " + *expected + ", got " +
                                 (actual.empty() ? std::string("no role") : actual));
        }
    }
    if (hello) learned_version_ = hello_version(*replies_[handshake_replies_ - 1]);
    return std::nullopt;
}

void Operation::restart() {
    const Kind kind = kind_;
    begin(kind, nullptr);
    reader_ = ReplyReader{limits_};
}

namespace {
// Metadata a call had many entries or long strings in: not kept for the next call.
bool large(const Metadata& metadata) {
    if (metadata.entries.capacity() > kKeepMapPairs) return true;
    std::size_t bytes = 0;
    for (const auto& [audience, subject] : metadata.entries) bytes += audience.capacity() + subject.capacity();
    return bytes > Operation::kKeep;
}

void trim_metadata(std::optional<Metadata>& metadata) noexcept {
    if (metadata && large(*metadata)) metadata.reset();
}
}  // namespace

void Operation::trim() noexcept {
    commands_.trim(kKeep);
    prefixed_.trim(kKeep);
    raw_.trim(kKeep);
    replies_.clear();  // back to the spare replies, which free the large ones
    if (result_.text.capacity() > kKeep) std::string().swap(result_.text);
    if (result_.map.capacity() > kKeepMapPairs) decltype(result_.map)().swap(result_.map);
    if (set_.value.capacity() > kKeep) std::string().swap(set_.value);
    if (set_.old_key && set_.old_key->capacity() > kKeep) std::string().swap(*set_.old_key);
    if (spare_old_key_.capacity() > kKeep) std::string().swap(spare_old_key_);
    trim_metadata(set_.metadata);
    trim_metadata(delete_.metadata);
    if (large(spare_metadata_)) spare_metadata_ = Metadata{};
    if (reader_.buffered_capacity() > kKeep) {
        try {
            reader_ = ReplyReader{limits_};
        } catch (const std::bad_alloc&) {
            // keeps the old reader, usable: begin() replaces it when it must
        }
    }
}

void Operation::set_reader_limits(const ReaderLimits& limits) {
    limits_ = limits;
    if (!reader_.set_limits(limits_)) reader_ = ReplyReader{limits_};
}

bool read_score_map(const Reply& reply, std::vector<std::pair<std::string, std::string>>& map) {
    if (reply.type != Reply::Type::Array || reply.elements.size() % 2 != 0) return false;
    const std::size_t pairs = reply.elements.size() / 2;
    if (map.size() > pairs) map.resize(pairs);  // (no default pair is made: no allocation)
    for (std::size_t i = 0; i < pairs; ++i) {
        const Reply& member = *reply.elements[2 * i];
        const Reply& score = *reply.elements[2 * i + 1];
        if (member.type != Reply::Type::String || score.type != Reply::Type::String) return false;
        if (i < map.size()) {
            map[i].first.assign(member.str);
            map[i].second.assign(score.str);
        } else {
            map.emplace_back(member.str, score.str);
        }
    }
    return true;
}

// Copies the text into the kept result's buffer (it keeps its capacity for the
// next call); a map is filled in place (read_score_map), never through here.
void Operation::finish(Result result) {
    result_.kind = result.kind;
    result_.text.assign(result.text);
    result_.version = result.version;
    finished_ = true;
}

// MULTI, QUEUED..., EXEC: the first error reply anywhere (queueing or execution) wins.
Result Operation::transaction_result() const {
    const std::size_t exec_at = replies_.size() - (waits() ? 2 : 1);
    for (std::size_t at = 0; at <= exec_at; ++at) {
        if (replies_[at]->is_error()) return Result::error(replies_[at]->str);
    }
    const Reply& exec = *replies_[exec_at];
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

    if (kind_ == Kind::Raw) return finish(Result{});  // replies stay in replies_

    Reply& first = *replies_.front();
    Result result;
    switch (kind_) {
    case Kind::Set:
    case Kind::Delete:
        if (is_transaction()) {
            result = transaction_result();
        } else if (first.is_error()) {
            result = Result::error(first.str);
        }
        // Applied on the master but maybe not on its replicas: not acknowledged.
        if (result.kind != Result::Kind::Error && waits()) {
            if (auto shortfall = wait_shortfall(*replies_.back(), durability_)) result = Result::error(*shortfall);
        }
        break;
    case Kind::Get:
        if (first.is_error()) {
            result = Result::error(first.str);
        } else if (first.type == Reply::Type::Nil) {
            result.kind = Result::Kind::Nil;
        } else if (first.type == Reply::Type::String) {
            // into the result's own buffer; the reply keeps its buffer for the next one.
            // A large value is moved, not copied: one copy less at the peak.
            result_.kind = Result::Kind::String;
            if (first.str.size() > kKeep) {
                result_.text.swap(first.str);
            } else {
                result_.text.assign(first.str);
            }
            finished_ = true;
            return;
        } else {
            result = Result::error("unexpected reply to GET");
        }
        break;
    case Kind::ReadMetadata:
        if (first.is_error()) {
            result = Result::error(first.str);
        } else if (!read_score_map(first, result_.map)) {
            result = Result::error("unexpected reply to ZRANGEBYSCORE");
        } else {
            result_.kind = Result::Kind::Map;  // (the map filled in place, as a value is)
            finished_ = true;
            return;
        }
        break;
    case Kind::Handshake: {
        handshake_replies_ = replies_.size();
        prefixed_handshake_ = handshake_;
        std::optional<Result> refused = check_handshake_replies();
        handshake_replies_ = 0;
        if (refused) return finish(std::move(*refused));
        result.kind = Result::Kind::Version;
        result.version = learned_version_;
        break;
    }
    case Kind::Raw:
        break;
    }
    finish(std::move(result));
}

}  // namespace rsh
