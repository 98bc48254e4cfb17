// Redis Sentinel, sans-I/O: the queries a client sends the sentinels to find
// the current master (or the healthy replicas) of a named group, their answers,
// and which answer to follow when the sentinels disagree. Both transports drive
// it (native sockets in sentinel_client.cpp, cosockets in
// lua/resty/session/hiredis/sentinel.lua); the address it yields is then served
// by the single-node path.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "config.hpp"
#include "resp.hpp"

namespace rsh {

struct SentinelAddress {
    std::string host;
    int port = 0;

    bool operator==(const SentinelAddress& o) const { return port == o.port && host == o.host; }
    bool operator!=(const SentinelAddress& o) const { return !(*this == o); }
};

struct SentinelAnswer {
    enum class Kind {
        Master,             // address, config_epoch, failover_in_progress
        Replicas,           // replicas (healthy ones, in the sentinel's order), config_epoch
        Promoted,           // address: the replica a failover in progress promotes
        NoPromotedReplica,  // no replica is being promoted (yet)
        UnknownMaster,      // the sentinel does not monitor the name
        Error,              // error: Redis's text or ours
    };
    Kind kind = Kind::Error;
    SentinelAddress address;
    long long config_epoch = 0;
    bool failover_in_progress = false;
    std::vector<SentinelAddress> replicas;
    std::string error;
};

class SentinelQuery {
public:
    // Master: SENTINEL MASTER (address, config-epoch, flags). Replicas: SENTINEL
    // MASTER and SENTINEL REPLICAS (the epoch, then the healthy replicas).
    // Promoted (to a failover's leader): SENTINEL MASTER and SENTINEL REPLICAS,
    // answered from one state: the replica flagged `promoted` while the failover
    // is in progress (Promoted), else the master it names (Master: the switch
    // happened, or no replica is picked yet).
    enum class Ask { Master, Replicas, Promoted };

    // credentials are sent (AUTH [username] password) only when `authenticate`
    // is true: on a new connection, or on every call with force_auth.
    SentinelQuery(Ask ask, std::string_view master_name, const std::optional<std::string>& username,
                  const std::optional<std::string>& password, bool authenticate);
    // The same query afresh, keeping its buffers (a reused round's).
    void reset(Ask ask, std::string_view master_name, const std::optional<std::string>& username,
               const std::optional<std::string>& password, bool authenticate);

    // The request bytes (one write).
    std::string_view request() const { return std::string_view(commands_.bytes()); }
    // Feeds reply bytes; true once every reply is in. Throws ProtocolError.
    bool feed(const char* data, std::size_t len);
    bool finished() const { return answer_.has_value(); }
    // Valid once finished().
    const SentinelAnswer& answer() const { return *answer_; }

private:
    void conclude();
    // The fast path of a lone SENTINEL MASTER (no AUTH before it): its flat
    // array of bulk strings read in place from flat_, without reply objects.
    // Anything it does not take whole (an error, a nil, a non-canonical or
    // oversized reply, bytes after it) goes to reader_, which answers as ever.
    enum class Flat { Done, NeedMore, Fallback };
    Flat read_flat_master(std::string_view text);
    static constexpr int kMaxFlatChunks = 16;  // then the reader takes over (no quadratic rescans)
    bool flat_path_ = false;
    std::string flat_;
    int flat_chunks_ = 0;

    Ask ask_;
    CommandBuffer commands_;
    bool authenticates_ = false;
    // Made when first needed: a pooled lookup read in place never makes one.
    std::optional<ReplyReader> reader_;
    ReplyReader& reader() {
        if (!reader_) reader_.emplace();
        return *reader_;
    }
    std::vector<ReplyPtr> replies_;
    std::optional<SentinelAnswer> answer_;
};

// SENTINEL MASTER's flat [field, value...] array; an error naming an unknown
// master (or a nil) is UnknownMaster.
SentinelAnswer parse_master(const Reply& reply);
// The healthy replicas from SENTINEL REPLICAS: flags without s_down, o_down or
// disconnected, and master-link-status "ok".
SentinelAnswer parse_replicas(const Reply& reply);
// The replica flagged `promoted` in SENTINEL REPLICAS (only the sentinel that
// leads a failover flags it, from the moment it picks it until the switch).
SentinelAnswer parse_promoted(const Reply& reply);

// Which answer to follow out of one round of answers (one per sentinel).
struct SentinelChoice {
    enum class Kind {
        Master,            // address, from
        AskPromoted,       // a failover in progress: ask `leaders` (from: the first) for
                           // the replica promoted; address (the master they still name)
                           // until one is
        Replicas,          // replicas, from
        UnknownMaster,     // no sentinel monitors the name
        NoAnswer,          // none answered: error is the last failure
    };
    Kind kind = Kind::NoAnswer;
    std::size_t from = 0;
    std::vector<std::size_t> leaders;  // AskPromoted: the answers flagged failover_in_progress
    SentinelAddress address;
    std::vector<SentinelAddress> replicas;
    std::string error;
};

// The newest configuration wins: among the answers with the highest
// config-epoch, those reporting a failover in progress (its leader, about to
// switch to the replica it promotes, is among them) unless another at that
// epoch already names a different master (the switch happened); else the first
// in order.
SentinelChoice choose_answer(const std::vector<const SentinelAnswer*>& answers);

// One round of queries to every sentinel asked by a call: the driver sends
// every request first, then reads the answers (the round costs the slowest
// answer, not their sum). Sentinels added as `retry` (ones that failed lately)
// are served last: once another sentinel answered, they are waited for only up
// to retry_budget_ms(), so a sentinel that stays dead or hung costs its full
// timeout once, not on every retry.
class SentinelRound {
public:
    SentinelRound(SentinelQuery::Ask ask, std::string_view master_name, double start_ms);
    // A new round in this object, keeping its entries' queries and buffers: a
    // driver that reuses its rounds allocates nothing per lookup.
    void reset(SentinelQuery::Ask ask, std::string_view master_name, double start_ms);

    // Registers a sentinel (in the caller's order); returns its index.
    std::size_t add(bool retry);
    std::size_t size() const { return used_; }
    bool retry(std::size_t i) const { return entry(i).retry; }
    // Builds sentinel i's query once its connection is known (AUTH on a new one,
    // or with force_auth), again for a replacement connection; the request bytes.
    std::string_view prepare(std::size_t i, const std::optional<std::string>& username,
                             const std::optional<std::string>& password, bool authenticate);

    // Feeds sentinel i's reply bytes; true once it is done. failed(i) then tells
    // whether it answered: bytes that broke the protocol and error replies (a
    // refused AUTH...) fail it, and its connection is not to be pooled.
    bool feed(std::size_t i, const char* data, std::size_t len);
    // Sentinel i could not be reached, timed out or was given up on.
    void fail(std::size_t i, std::string error);
    bool done(std::size_t i) const { return entry(i).state != State::Pending; }
    bool failed(std::size_t i) const { return entry(i).state == State::Failed; }
    const std::string& error(std::size_t i) const { return entry(i).error; }
    // The answer of sentinel i; valid when done and not failed.
    const SentinelAnswer& answer(std::size_t i) const { return entry(i).query->answer(); }

    // Called once every other sentinel is done: the milliseconds the driver may
    // still spend on the retries (connect, send and read included), or nullopt
    // when no other sentinel answered (the retries are the only hope: their own
    // timeouts apply). The retries may take as long again as the round took so
    // far, and the round kRetryFloorMs at least: enough for a healthy sentinel
    // on a new connection.
    std::optional<double> retry_budget_ms(double now_ms) const;

    SentinelChoice choose() const;

    static constexpr double kRetryFloorMs = 5;

private:
    enum class State { Pending, Answered, Failed };
    struct Entry {
        std::optional<SentinelQuery> query;  // kept across rounds; this round's once prepared
        bool prepared = false;
        bool retry = false;
        State state = State::Pending;
        std::string error;
    };
    // Entry i of this round (std::out_of_range beyond it).
    Entry& entry(std::size_t i);
    const Entry& entry(std::size_t i) const;

    SentinelQuery::Ask ask_ = SentinelQuery::Ask::Master;
    std::string master_name_;
    double start_ms_ = 0;
    std::vector<Entry> entries_;  // [0, used_): this round's; the others wait for reuse
    std::size_t used_ = 0;
    mutable std::vector<const SentinelAnswer*> answers_;  // choose()'s, kept
};

}  // namespace rsh

namespace rsh {

// The pool of connections to one sentinel: its endpoint and the sentinel
// identity (a digest of the password, the TLS settings when `tls`), under the
// user's `pool` when given. Never equal to a data pool name: sentinel and data
// connections never mix.
std::string sentinel_pool_name(const std::string& host, int port, const std::optional<std::string>& username,
                               const std::optional<std::string>& password,
                               const std::optional<std::string>& custom_pool,
                               const std::optional<TlsSettings>& tls = std::nullopt);

}  // namespace rsh
