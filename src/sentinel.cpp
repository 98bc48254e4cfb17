#include "sentinel.hpp"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string_view>

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

SentinelQuery::SentinelQuery(Ask ask, std::string_view master_name, const std::optional<std::string>& username,
                             const std::optional<std::string>& password, bool authenticate) {
    reset(ask, master_name, username, password, authenticate);
}

void SentinelQuery::reset(Ask ask, std::string_view master_name, const std::optional<std::string>& username,
                          const std::optional<std::string>& password, bool authenticate) {
    ask_ = ask;
    commands_.clear();
    authenticates_ = false;
    if (authenticate && password) {
        if (username) commands_.add({"AUTH", *username, *password});
        else commands_.add({"AUTH", *password});
        authenticates_ = true;
    }
    // one write, so the sentinel answers both from the same state of its failover
    commands_.add({"SENTINEL", "MASTER", master_name});
    if (ask != Ask::Master) commands_.add({"SENTINEL", "REPLICAS", master_name});
    flat_path_ = ask == Ask::Master && !authenticates_;
    flat_.clear();
    flat_chunks_ = 0;
    if (reader_) reader_.reset();  // (used: it may hold bytes, or have failed)
    replies_.clear();
    answer_.reset();
}

bool SentinelQuery::feed(const char* data, std::size_t len) {
    if (answer_) throw ProtocolError("protocol error: unexpected data from the sentinel");
    if (flat_path_) {
        // A pooled lookup's one reply, read where it lies: the reader builds a
        // reply object per element (some forty), the largest cost of a lookup in
        // a worker's profile, for the four fields we use.
        if (flat_.empty()) {  // (a whole reply in one chunk: no copy)
            const Flat flat = read_flat_master(std::string_view(data, len));
            if (flat == Flat::Done) return true;
            if (flat == Flat::NeedMore) {
                flat_.assign(data, len);
                return false;
            }
        } else {
            flat_.append(data, len);
            const Flat flat = read_flat_master(flat_);
            if (flat == Flat::Done) return true;
            if (flat == Flat::NeedMore && ++flat_chunks_ < kMaxFlatChunks) return false;
            data = flat_.data();
            len = flat_.size();
        }
        flat_path_ = false;  // the reader takes it from here, from the first byte
    }
    reader().feed(data, len);
    flat_.clear();
    while (replies_.size() < commands_.count()) {
        ReplyPtr reply = reader_->next();
        if (!reply) return false;
        replies_.push_back(std::move(reply));
    }
    if (reader_->has_pending_bytes()) throw ProtocolError("protocol error: unexpected data from the sentinel");
    conclude();
    return true;
}

void SentinelQuery::conclude() {
    std::size_t next = 0;
    if (authenticates_ && replies_[next++]->is_error()) {
        answer_ = failure(replies_.front()->str);
        return;
    }
    SentinelAnswer master = parse_master(*replies_[next++]);
    if (ask_ == Ask::Master || master.kind != SentinelAnswer::Kind::Master) {
        answer_ = std::move(master);
        return;
    }
    if (ask_ == Ask::Promoted) {
        // switched already, or no replica picked yet: the master it names
        if (!master.failover_in_progress) {
            answer_ = std::move(master);
            return;
        }
        SentinelAnswer promoted = parse_promoted(*replies_[next]);
        if (promoted.kind == SentinelAnswer::Kind::NoPromotedReplica) promoted = std::move(master);
        answer_ = std::move(promoted);
        return;
    }
    SentinelAnswer replicas = parse_replicas(*replies_[next]);
    if (replicas.kind == SentinelAnswer::Kind::Replicas) {
        replicas.config_epoch = master.config_epoch;
        replicas.failover_in_progress = master.failover_in_progress;
    }
    answer_ = std::move(replicas);
}

namespace {

// SENTINEL MASTER's answer from its fields (nullptr: absent).
SentinelAnswer master_answer(const std::string* ip, const std::string* port, const std::string* epoch,
                             const std::string* flags) {
    SentinelAnswer answer;
    const char* unexpected = "unexpected reply to SENTINEL MASTER";
    if (!ip || ip->empty() || !port || !valid_port(*port, answer.address.port)) return failure(unexpected);
    if (epoch) {
        char* end = nullptr;
        answer.config_epoch = std::strtoll(epoch->c_str(), &end, 10);
        if (epoch->empty() || *end != '\0' || answer.config_epoch < 0) return failure(unexpected);
    }
    answer.kind = SentinelAnswer::Kind::Master;
    answer.address.host = *ip;
    answer.failover_in_progress = flags && has_flag(*flags, "failover_in_progress");
    return answer;
}

}  // namespace

SentinelAnswer parse_master(const Reply& reply) {
    SentinelAnswer answer;
    // Redis answers an unknown name with this error (older sentinels: nil)
    if (reply.type == Reply::Type::Nil ||
        (reply.is_error() && reply.str.find("No such master") != std::string::npos)) {
        answer.kind = SentinelAnswer::Kind::UnknownMaster;
        return answer;
    }
    if (reply.is_error()) return failure(reply.str);
    if (reply.type != Reply::Type::Array || reply.elements.size() % 2 != 0) {
        return failure("unexpected reply to SENTINEL MASTER");
    }
    return master_answer(field(reply, "ip"), field(reply, "port"), field(reply, "config-epoch"), field(reply, "flags"));
}

namespace {

// A canonical RESP length line at text[pos...]: digits ("0", or no leading
// zero), CRLF. The length, pos after the CRLF; -1: incomplete; -2: anything else.
long long length_line(std::string_view text, std::size_t& pos) {
    // (a byte the reader would refuse is refused as soon as it is here, as the reader does)
    long long n = 0;
    std::size_t i = pos;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (i - pos >= 9 || (i > pos && text[pos] == '0')) return -2;  // long, or a leading zero
        n = n * 10 + (text[i] - '0');
    }
    if (i == text.size()) return -1;
    if (i == pos || text[i] != '\r') return -2;
    if (i + 1 == text.size()) return -1;
    if (text[i + 1] != '\n') return -2;
    pos = i + 2;
    return n;
}

}  // namespace

SentinelQuery::Flat SentinelQuery::read_flat_master(std::string_view text) {
    // Only a flat array of bulk strings, complete and alone, canonical and
    // small; anything else goes to the reader, which answers it as ever.
    constexpr std::size_t kMaxBytes = 64 * 1024;
    constexpr long long kMaxElements = 1024;
    if (text.size() > kMaxBytes) return Flat::Fallback;
    if (text.empty()) return Flat::NeedMore;
    if (text[0] != '*') return Flat::Fallback;
    std::size_t pos = 1;
    const long long count = length_line(text, pos);
    if (count == -1) return Flat::NeedMore;
    if (count < 0 || count > kMaxElements || count % 2 != 0) return Flat::Fallback;
    std::string_view name;
    std::optional<std::string_view> ip, port, epoch, flags;
    for (long long i = 0; i < count; ++i) {
        if (pos == text.size()) return Flat::NeedMore;
        if (text[pos] != '$') return Flat::Fallback;
        ++pos;
        const long long len = length_line(text, pos);
        if (len == -1) return Flat::NeedMore;
        if (len < 0 || len > static_cast<long long>(kMaxBytes)) return Flat::Fallback;  // (the reader's limits)
        const auto size = static_cast<std::size_t>(len);
        const std::size_t left = text.size() - pos;
        if (left > size && text[pos + size] != '\r') return Flat::Fallback;
        if (left > size + 1 && text[pos + size + 1] != '\n') return Flat::Fallback;
        if (left < size + 2) return Flat::NeedMore;
        const std::string_view value = text.substr(pos, size);
        pos += size + 2;
        if (i % 2 == 0) {
            name = value;
            continue;
        }
        // the first of each name, as field() takes it
        if (name == "ip" && !ip) ip = value;
        else if (name == "port" && !port) port = value;
        else if (name == "config-epoch" && !epoch) epoch = value;
        else if (name == "flags" && !flags) flags = value;
    }
    if (pos != text.size()) return Flat::Fallback;  // trailing bytes: the reader's error
    std::string ip_text, port_text, epoch_text, flags_text;
    auto text_of = [](const std::optional<std::string_view>& view, std::string& into) -> const std::string* {
        if (!view) return nullptr;
        into.assign(view->data(), view->size());
        return &into;
    };
    answer_ = master_answer(text_of(ip, ip_text), text_of(port, port_text), text_of(epoch, epoch_text),
                            text_of(flags, flags_text));
    return Flat::Done;
}

SentinelAnswer parse_replicas(const Reply& reply) {
    if (reply.is_error()) return failure(reply.str);
    if (reply.type != Reply::Type::Array) return failure("unexpected reply to SENTINEL REPLICAS");
    SentinelAnswer answer;
    answer.kind = SentinelAnswer::Kind::Replicas;
    for (const auto& entry : reply.elements) {
        if (entry->type != Reply::Type::Array) return failure("unexpected reply to SENTINEL REPLICAS");
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

SentinelAnswer parse_promoted(const Reply& reply) {
    if (reply.is_error()) return failure(reply.str);
    if (reply.type != Reply::Type::Array) return failure("unexpected reply to SENTINEL REPLICAS");
    SentinelAnswer answer;
    answer.kind = SentinelAnswer::Kind::NoPromotedReplica;
    for (const auto& entry : reply.elements) {
        if (entry->type != Reply::Type::Array) return failure("unexpected reply to SENTINEL REPLICAS");
        const std::string* flags = field(*entry, "flags");
        if (!flags || !has_flag(*flags, "promoted")) continue;
        const std::string* ip = field(*entry, "ip");
        const std::string* port = field(*entry, "port");
        if (!ip || ip->empty() || !port || !valid_port(*port, answer.address.port)) {
            return failure("unexpected reply to SENTINEL REPLICAS");
        }
        answer.kind = SentinelAnswer::Kind::Promoted;
        answer.address.host = *ip;
        return answer;
    }
    return answer;
}

SentinelChoice choose_answer(const std::vector<const SentinelAnswer*>& answers) {
    using Kind = SentinelAnswer::Kind;
    SentinelChoice choice;
    const SentinelAnswer* best = nullptr;
    bool unknown = false;
    for (std::size_t i = 0; i < answers.size(); ++i) {
        const SentinelAnswer* a = answers[i];
        if (!a) continue;
        if (a->kind == Kind::UnknownMaster) unknown = true;
        if (a->kind != Kind::Master && a->kind != Kind::Replicas) continue;
        if (!best || a->config_epoch > best->config_epoch) {
            best = a;
            choice.from = i;
        }
    }
    if (!best) {
        choice.kind = unknown ? SentinelChoice::Kind::UnknownMaster : SentinelChoice::Kind::NoAnswer;
        return choice;
    }
    if (best->kind == Kind::Replicas) {
        choice.kind = SentinelChoice::Kind::Replicas;
        choice.replicas = best->replicas;
        return choice;
    }
    // at the highest epoch: the sentinels running a failover (after an o_down
    // several try until one is elected), unless another already switched
    for (std::size_t i = 0; i < answers.size(); ++i) {
        const SentinelAnswer* a = answers[i];
        if (a && a->kind == Kind::Master && a->config_epoch == best->config_epoch && a->failover_in_progress) {
            choice.leaders.push_back(i);
        }
    }
    if (!choice.leaders.empty()) {
        const SentinelAddress& named = answers[choice.leaders.front()]->address;
        for (std::size_t i = 0; i < answers.size(); ++i) {
            const SentinelAnswer* a = answers[i];
            if (a && a->kind == Kind::Master && a->config_epoch == best->config_epoch && !a->failover_in_progress &&
                a->address != named) {
                choice.kind = SentinelChoice::Kind::Master;
                choice.from = i;
                choice.address = a->address;
                choice.leaders.clear();
                return choice;
            }
        }
        choice.kind = SentinelChoice::Kind::AskPromoted;
        choice.from = choice.leaders.front();
        choice.address = named;
        return choice;
    }
    choice.kind = SentinelChoice::Kind::Master;
    choice.address = best->address;
    return choice;
}

SentinelRound::SentinelRound(SentinelQuery::Ask ask, std::string_view master_name, double start_ms) {
    entries_.reserve(4);
    reset(ask, master_name, start_ms);
}

void SentinelRound::reset(SentinelQuery::Ask ask, std::string_view master_name, double start_ms) {
    ask_ = ask;
    master_name_.assign(master_name.data(), master_name.size());
    start_ms_ = start_ms;
    used_ = 0;
}

std::size_t SentinelRound::add(bool retry) {
    if (used_ == entries_.size()) entries_.emplace_back();
    Entry& entry = entries_[used_];  // a reused entry keeps its query (and its buffers) for prepare
    entry.retry = retry;
    entry.state = State::Pending;
    entry.error.clear();
    entry.prepared = false;
    return used_++;
}

SentinelRound::Entry& SentinelRound::entry(std::size_t i) {
    if (i >= used_) throw std::out_of_range("sentinel index");
    return entries_[i];
}

const SentinelRound::Entry& SentinelRound::entry(std::size_t i) const {
    if (i >= used_) throw std::out_of_range("sentinel index");
    return entries_[i];
}

std::string_view SentinelRound::prepare(std::size_t i, const std::optional<std::string>& username,
                                        const std::optional<std::string>& password, bool authenticate) {
    Entry& e = entry(i);
    if (e.query) e.query->reset(ask_, master_name_, username, password, authenticate);
    else e.query.emplace(ask_, master_name_, username, password, authenticate);
    e.prepared = true;
    e.state = State::Pending;
    e.error.clear();
    return e.query->request();
}

bool SentinelRound::feed(std::size_t i, const char* data, std::size_t len) {
    Entry& entry = this->entry(i);
    if (entry.state != State::Pending || !entry.prepared) {
        throw ProtocolError("protocol error: unexpected data from the sentinel");
    }
    try {
        if (!entry.query->feed(data, len)) return false;
    } catch (const ProtocolError& e) {
        entry.state = State::Failed;
        entry.error = e.what();
        return true;
    }
    if (entry.query->answer().kind == SentinelAnswer::Kind::Error) {
        entry.state = State::Failed;
        entry.error = entry.query->answer().error;
        return true;
    }
    entry.state = State::Answered;
    return true;
}

void SentinelRound::fail(std::size_t i, std::string error) {
    Entry& entry = this->entry(i);
    entry.state = State::Failed;
    entry.error = std::move(error);
}

std::optional<double> SentinelRound::retry_budget_ms(double now_ms) const {
    for (std::size_t i = 0; i < used_; ++i) {
        const Entry& entry = entries_[i];
        if (!entry.retry && entry.state == State::Answered) {
            const double spent = now_ms - start_ms_;
            return std::max(kRetryFloorMs, 2 * spent) - spent;
        }
    }
    return std::nullopt;
}

SentinelChoice SentinelRound::choose() const {
    answers_.assign(used_, nullptr);  // (kept between rounds: no allocation)
    for (std::size_t i = 0; i < used_; ++i) {
        if (entries_[i].state == State::Answered) answers_[i] = &entries_[i].query->answer();
    }
    SentinelChoice choice = choose_answer(answers_);
    if (choice.kind == SentinelChoice::Kind::NoAnswer) {
        for (std::size_t i = used_; i-- > 0;) {
            if (entries_[i].state == State::Failed) {
                choice.error = entries_[i].error;
                break;
            }
        }
        if (choice.error.empty()) choice.error = "no sentinel answered";
    }
    return choice;
}

}  // namespace rsh

#include "config.hpp"

namespace rsh {

std::string sentinel_pool_name(const std::string& host, int port, const std::optional<std::string>& username,
                               const std::optional<std::string>& password,
                               const std::optional<std::string>& custom_pool,
                               const std::optional<TlsSettings>& tls) {
    Config identity;
    identity.host = host;
    identity.port = port;
    identity.username = username;
    identity.password = password;
    if (tls) {
        auto set = [](const std::string& v) { return v.empty() ? std::nullopt : std::optional<std::string>(v); };
        identity.ssl = true;
        identity.ssl_verify = tls->verify;
        identity.server_name = set(tls->server_name);
        identity.ssl_trusted_certificate = set(tls->trusted_certificate);
        identity.ssl_client_cert = set(tls->client_cert);
        identity.ssl_client_priv_key = set(tls->client_priv_key);
    }
    std::string name = "sentinel|";
    if (custom_pool) name += *custom_pool + "|";
    return name + identity.pool_name();
}

}  // namespace rsh
