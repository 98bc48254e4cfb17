// One storage call as a sans-I/O state machine: it hands out the bytes of each
// round trip, is fed the reply bytes, and ends with a Result. Both transports
// (native sockets in C++, ngx.socket.tcp in Lua) drive the same Operation.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "durability.hpp"
#include "keys.hpp"
#include "resp.hpp"

namespace rsh {

// Redis versions as major * 10000 + minor * 100 + patch; 0 when unknown
// (treated as the oldest: upstream's command sequence).
constexpr long kRedis7 = 70000;
long parse_redis_version(const std::string& text);

// What EXPIRE's NX, GT and LT (Redis 7.0) do, for older servers: EVAL <script> 1
// <key> <seconds>, inside the same MULTI/EXEC, with the same integer reply (1 set,
// 0 not). Compared to the millisecond, as EXPIRE compares.
namespace ttl_script {
// EXPIRE key ttl NX + EXPIRE key ttl GT: extend the key's life, never shorten it
// (a key without a TTL gets one; a missing key is left alone).
inline constexpr std::string_view kExtend =
    "local t = redis.call('PTTL', KEYS[1]) "
    "if t == -1 or (t >= 0 and t < tonumber(ARGV[1]) * 1000) then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[1]) end return 0";
// EXPIRE key ttl LT: shorten only (a key without a TTL counts as infinite).
inline constexpr std::string_view kShorten =
    "local t = redis.call('PTTL', KEYS[1]) "
    "if t == -1 or t > tonumber(ARGV[1]) * 1000 then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[1]) end return 0";

// The commands that extend key's TTL to `seconds` and never shorten it, in the
// server's form, through add({ args... }) (a CommandBuffer's or a cluster group's).
template <class Add>
void add_extend(Add&& add, std::string_view key, std::string_view seconds, bool redis7) {
    if (redis7) {
        add({"EXPIRE", key, seconds, "NX"});
        add({"EXPIRE", key, seconds, "GT"});
    } else {
        add({"EVAL", kExtend, "1", key, seconds});
    }
}

// The command that lowers key's TTL to `seconds`, never raises it (EXPIRE ... LT).
template <class Add>
void add_shorten(Add&& add, std::string_view key, std::string_view seconds, bool redis7) {
    if (redis7) {
        add({"EXPIRE", key, seconds, "LT"});
    } else {
        add({"EVAL", kShorten, "1", key, seconds});
    }
}
}  // namespace ttl_script

struct Metadata {
    std::vector<std::pair<std::string, std::string>> entries;  // (audience, subject)
};

struct SetArgs {
    std::string name, key, value;
    long long ttl = 0;
    double current_time = 0;
    std::optional<std::string> old_key;
    long long stale_ttl = 0;
    std::optional<Metadata> metadata;
};

struct GetArgs {
    std::string name, key;
};

struct DeleteArgs {
    std::string name, key;
    double current_time = 0;
    std::optional<Metadata> metadata;
};

struct ReadMetadataArgs {
    std::string name, audience, subject;
    double current_time = 0;
};

struct HandshakeArgs {
    std::optional<std::string> username, password;  // AUTH when password is set
    std::optional<long long> database;              // SELECT when set
    bool hello = true;                              // HELLO 2: learn the server version
    std::optional<std::string> role;                // ROLE must answer this ("master", "slave")

    // True when the connection needs no handshake command at all.
    bool sends_nothing() const { return !password && !database && !hello && !role; }
};

struct Result {
    enum class Kind { Ok, Nil, String, Map, Version, Error };
    Kind kind = Kind::Ok;
    std::string text;                                       // String value or error message
    std::vector<std::pair<std::string, std::string>> map;  // read_metadata: key -> score
    long version = 0;                                       // handshake

    static Result error(std::string message) {
        Result r;
        r.kind = Kind::Error;
        r.text = std::move(message);
        return r;
    }
};

// The (member, score) pairs of a ZRANGEBYSCORE ... WITHSCORES reply into map, whose
// pairs' buffers from earlier calls are reused (a steady read_metadata allocates
// nothing); false, map unspecified, when the reply has another shape.
bool read_score_map(const Reply& reply, std::vector<std::pair<std::string, std::string>>& map);
// Past this many pairs, trim() frees a kept map.
inline constexpr std::size_t kKeepMapPairs = 256;

// Appends WAIT to a write's round trip (nothing when durability is off).
void add_wait(CommandBuffer& out, const Durability& durability);
// The error of a WAIT reply that falls short of durability (nullopt when it holds).
std::optional<std::string> wait_shortfall(const Reply& reply, const Durability& durability);

class Operation {
public:
    // An empty operation, to be started with one of the start_* calls below
    // (the cosocket driver reuses one per call: buffers keep their capacity).
    Operation() = default;

    static Operation set(const KeyNaming& naming, SetArgs args);
    static Operation get(const KeyNaming& naming, const GetArgs& args);
    static Operation remove(const KeyNaming& naming, const DeleteArgs& args);
    static Operation read_metadata(const KeyNaming& naming, const ReadMetadataArgs& args);
    // nullopt when the handshake has nothing to send.
    static std::optional<Operation> handshake(const HandshakeArgs& args);

    // In-place starts: the arguments are filled by the caller into the returned
    // struct (assignments reuse the previous call's capacity). Resets everything.
    SetArgs& start_set(const KeyNaming& naming);
    GetArgs& start_get(const KeyNaming& naming);
    DeleteArgs& start_delete(const KeyNaming& naming);
    ReadMetadataArgs& start_read_metadata(const KeyNaming& naming);
    // After start_set: the set's old_key, present and empty, in the buffer of an
    // earlier call's (a session key is longer than a string keeps in place: a new
    // std::string would allocate per call).
    std::string& emplace_old_key();
    // After start_set or start_delete: the call's metadata, present, with `count`
    // entries whose strings are an earlier call's (assign them: no allocation
    // when as many entries as long came before).
    Metadata& emplace_metadata(std::size_t count);
    // A ready-made round trip whose replies are kept as they are, for whoever
    // built it to read (a cluster node's share of a call: cluster_operation).
    void start_raw(const CommandBuffer& commands);
    // The replies of a finished raw round trip (trim() releases them: trim once they are read).
    std::vector<ReplyPtr>& raw_replies() { return replies_; }
    bool is_raw() const { return kind_ == Kind::Raw; }

    // The arguments loaded by start_* (nullptr for the other kinds): the cluster
    // operation splits them across slots.
    const SetArgs* set_args() const { return kind_ == Kind::Set ? &set_ : nullptr; }
    const GetArgs* get_args() const { return kind_ == Kind::Get ? &get_ : nullptr; }
    const DeleteArgs* delete_args() const { return kind_ == Kind::Delete ? &delete_ : nullptr; }
    const ReadMetadataArgs* read_metadata_args() const { return kind_ == Kind::ReadMetadata ? &read_ : nullptr; }

    // Bytes of the next round trip, or nullopt once the result is known; valid
    // until the next call on this operation. server_version picks the command
    // forms (see kRedis7).
    std::optional<std::string_view> next_request(long server_version);
    // Puts a connection's handshake (AUTH, SELECT, HELLO) in front of the round
    // trip just handed out by next_request, so that a new connection costs no
    // extra round trip; returns the whole request. An AUTH or SELECT refusal
    // ends the operation with Redis's error and handshake_failed() (the
    // connection is then unusable); HELLO's answer is in learned_version().
    std::string_view prefix_handshake(const HandshakeArgs& args);
    // Where a set's value (kSeparateValue bytes or more) starts in the request just
    // handed out (CommandBuffer::kNone: not in it; a raw round trip: as its
    // commands were marked, see ClusterOperation), and its size: the cosocket
    // driver sends those bytes from the caller's own Lua string rather than make
    // the whole request a new Lua string (LuaJIT interns every string: hashing and
    // comparing long requests that differ little was half of a set's instructions).
    std::size_t value_offset() const { return commands_.marked_offset(); }
    std::size_t value_size() const { return commands_.marked_size(); }
    static constexpr std::size_t kSeparateValue = 128;
    bool handshake_failed() const { return handshake_failed_; }
    // The server version from a prefixed HELLO; 0 when none was answered.
    long learned_version() const { return learned_version_; }
    // Feeds reply bytes of the current round trip; true once all its replies
    // are in. Throws ProtocolError on malformed or unexpected bytes.
    bool feed(const char* data, std::size_t len);
    // Takes this round trip's replies from a connection's shared reader, which
    // may hold later operations' replies too (auto-pipelining); true once all
    // are in. Throws ProtocolError as feed() does.
    bool take_replies(ReplyReader& reader);
    bool finished() const { return finished_; }
    // True once any reply byte of this operation arrived (then a retry is unsafe).
    bool received_bytes() const { return received_bytes_; }
    // Back to the start, keeping the arguments: for a retry on a fresh connection.
    void restart();
    // The reply limits (the configuration's max_reply_size); before the first feed.
    void set_reader_limits(const ReaderLimits& limits);
    // Whether writes (set, delete) wait for replicas (the configuration's
    // wait_replicas, wait_timeout); before next_request, kept across start_*.
    void set_durability(const Durability& durability) { durability_ = durability; }
    const Durability& durability() const { return durability_; }
    const Result& result() const { return result_; }
    Result& result() { return result_; }
    // Gives back memory that one large call grew (a 16 MiB value must not stay
    // with a reused operation), and the replies; small buffers are kept for the
    // next call. After a call, successful or not, once its result was read (a
    // large result is freed too).
    void trim() noexcept;
    // Buffers up to this size are kept for the next call.
    static constexpr std::size_t kKeep = 64 * 1024;

private:
    enum class Kind { Set, Get, Delete, ReadMetadata, Handshake, Raw };
    enum class Stage { Start, OldKeyTtl, Main };

    void begin(Kind kind, const KeyNaming* naming);
    bool is_transaction() const;
    bool waits() const;
    void build_main(std::optional<long long> old_ttl);
    void add_handshake_commands(CommandBuffer& out, const HandshakeArgs& args) const;
    std::optional<Result> check_handshake_replies();
    void complete_round();
    void finish(Result result);
    Result transaction_result() const;

    Kind kind_ = Kind::Get;
    KeyNaming naming_;
    Stage stage_ = Stage::Start;
    long server_version_ = 0;
    // The arguments of the kind at hand; the others stay empty.
    SetArgs set_;
    GetArgs get_;
    DeleteArgs delete_;
    ReadMetadataArgs read_;
    HandshakeArgs handshake_;
    // The buffers of the last call's old_key and metadata, for the next one's.
    std::string spare_old_key_;
    Metadata spare_metadata_;
    void keep_old_key();
    void keep_metadata(std::optional<Metadata>& metadata);
    CommandBuffer raw_;               // Kind::Raw: the round trip as given
    CommandBuffer commands_;          // the round trip being built
    CommandBuffer prefixed_;          // handshake + commands_, when prefixed
    std::string key_, meta_key_;      // key names, rebuilt in place per call
    std::size_t expected_replies_ = 0;  // replies of the round trip in flight
    std::size_t handshake_replies_ = 0; // of which the prefixed handshake's
    HandshakeArgs prefixed_handshake_;
    std::vector<ReplyPtr> replies_;
    ReaderLimits limits_;
    Durability durability_;
    ReplyReader reader_;
    bool finished_ = false;
    bool received_bytes_ = false;
    bool handshake_failed_ = false;
    long learned_version_ = 0;
    Result result_;
};

// Trims an operation (or a cluster operation) when a scope ends, whichever way
// it ends: a call that failed half-way must not keep a large value either.
template <class Op>
class TrimOnExit {
public:
    explicit TrimOnExit(Op& op) : op_(op) {}
    ~TrimOnExit() { op_.trim(); }
    TrimOnExit(const TrimOnExit&) = delete;
    TrimOnExit& operator=(const TrimOnExit&) = delete;

private:
    Op& op_;
};

}  // namespace rsh
