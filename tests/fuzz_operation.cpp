// libFuzzer target: the command builder and the Operation state machine. The
// input picks a method and its arguments (any bytes), the server version, and
// then the server's side: well-formed replies of fuzzed shape and content, or
// raw bytes, in fuzzed fragments. Checked on every input:
//  - each request is RESP arrays of bulk strings (parsed back with our reader),
//    one per reply expected, naming the session key built from the arguments;
//  - well-formed replies (right count, any shape) never raise a protocol error,
//    and the round trip completes exactly at their last byte;
//  - the result has a kind the method can return; a finished operation refuses
//    more bytes; restart() gives the same first request again.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "errors.hpp"
#include "operation.hpp"
#include "resp.hpp"

// A broken invariant: says which, then crashes (libFuzzer saves the input).
#define BUG() (std::fprintf(stderr, "invariant broken at %s:%d\n", __FILE__, __LINE__), __builtin_trap())

namespace {

using namespace rsh;


ReaderLimits limits() {
    ReaderLimits l;
    l.max_reply_bytes = 1 << 16;
    l.max_array_elements = 1 << 10;
    return l;
}

// The commands of one request, each as its arguments.
std::vector<std::vector<std::string>> parse_request(const std::string& bytes) {
    std::vector<std::vector<std::string>> commands;
    ReaderLimits l;
    l.max_reply_bytes = bytes.size() + 1024;
    l.max_array_elements = 1 << 20;
    ReplyReader reader(l);
    try {
        reader.feed(bytes.data(), bytes.size());
        while (ReplyPtr command = reader.next()) {
            if (command->type != Reply::Type::Array || command->elements.empty()) BUG();
            std::vector<std::string> args;
            for (const auto& arg : command->elements) {
                if (arg->type != Reply::Type::String) BUG();
                args.push_back(arg->str);
            }
            commands.push_back(std::move(args));
        }
    } catch (const ProtocolError&) {
        BUG();
    }
    if (reader.has_pending_bytes() || commands.empty()) BUG();
    return commands;
}

// One well-formed reply of fuzzed shape (depth <= 3).
void make_reply(FuzzedDataProvider& in, std::string& out, int depth) {
    switch (in.ConsumeIntegralInRange<int>(0, depth < 3 ? 6 : 5)) {
    case 0: out += "+" + (in.ConsumeBool() ? std::string("OK") : std::string("QUEUED")) + "\r\n"; break;
    case 1: {
        std::string text = in.ConsumeRandomLengthString(32);
        for (char& c : text) if (c == '\r' || c == '\n') c = ' ';
        out += "-" + text + "\r\n";
        break;
    }
    case 2: out += ":" + std::to_string(in.ConsumeIntegral<long long>()) + "\r\n"; break;
    case 3: out += in.ConsumeBool() ? "$-1\r\n" : "*-1\r\n"; break;
    case 4:
    case 5: {
        const std::string s = in.ConsumeRandomLengthString(64);
        out += "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
        break;
    }
    default: {
        const int n = in.ConsumeIntegralInRange<int>(0, 6);
        out += "*" + std::to_string(n) + "\r\n";
        for (int i = 0; i < n; ++i) make_reply(in, out, depth + 1);
        break;
    }
    }
}

// Feeds bytes in fuzzed fragments, to the operation or (auto-pipelining) to a
// shared reader it takes its replies from; returns whether the round is complete.
// Well-formed replies (exact) must complete it at their last byte; raw bytes may
// complete it earlier (what follows would be the next round's, or stray).
bool feed_in_pieces(FuzzedDataProvider& in, Operation& op, ReplyReader* shared, const std::string& bytes,
                    bool exact) {
    bool done = false;
    std::size_t at = 0;
    while (at < bytes.size()) {
        // once the input is used up, the rest goes in one piece (not byte by byte)
        const std::size_t n = in.remaining_bytes() == 0 ? bytes.size() - at
                                                        : in.ConsumeIntegralInRange<std::size_t>(1, bytes.size() - at);
        if (shared) {
            shared->feed(bytes.data() + at, n);
            done = op.take_replies(*shared);
        } else {
            done = op.feed(bytes.data() + at, n);
        }
        at += n;
        if (done && at < bytes.size()) {
            if (exact) BUG();  // complete before its last byte
            return true;
        }
    }
    if (exact && shared && shared->has_pending_bytes()) BUG();
    return done;
}

std::string key_bytes(FuzzedDataProvider& in) { return in.ConsumeRandomLengthString(24); }

std::optional<Metadata> metadata(FuzzedDataProvider& in) {
    if (!in.ConsumeBool()) return std::nullopt;
    Metadata m;
    const int n = in.ConsumeIntegralInRange<int>(0, 4);
    for (int i = 0; i < n; ++i) m.entries.emplace_back(key_bytes(in), key_bytes(in));
    return m;
}

double current_time(FuzzedDataProvider& in) {
    return in.ConsumeBool() ? 1700000000.0 : in.ConsumeFloatingPointInRange<double>(-1e15, 1e15);
}

enum class Expect { OkOrError, NilStringOrError, MapOrError, VersionOrError };

// Checks on a finished operation: the result has a kind the method returns; no
// more bytes are taken; restart() gives the first request again (unprefixed).
void check_finished(Operation& op, Expect expect, long version, const std::string& first_request, bool prefixed) {
    const Result::Kind kind = op.result().kind;
    const bool error = kind == Result::Kind::Error;
    switch (expect) {
    case Expect::OkOrError: if (!error && kind != Result::Kind::Ok) BUG(); break;
    case Expect::NilStringOrError:
        if (!error && kind != Result::Kind::Nil && kind != Result::Kind::String) BUG();
        break;
    case Expect::MapOrError: if (!error && kind != Result::Kind::Map) BUG(); break;
    case Expect::VersionOrError: if (!error && kind != Result::Kind::Version) BUG(); break;
    }
    // A finished operation takes no more bytes.
    try {
        op.feed("+OK\r\n", 5);
        BUG();
    } catch (const ProtocolError&) {
    }
    if (op.handshake_failed()) {
        if (!prefixed || !error) BUG();
        return;
    }
    op.restart();
    auto again = op.next_request(version);
    if (!again || *again != first_request) BUG();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    FuzzedDataProvider in(bytes, size);
    KeyNaming naming;
    if (in.ConsumeBool()) naming.prefix = key_bytes(in);
    if (in.ConsumeBool()) naming.suffix = key_bytes(in);

    std::optional<Operation> made;
    Expect expect = Expect::OkOrError;
    std::string session_key;  // the key the first command must name ("" = none)
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: {
        SetArgs a;
        a.name = key_bytes(in);
        a.key = key_bytes(in);
        a.value = in.ConsumeRandomLengthString(128);
        a.ttl = in.ConsumeIntegralInRange<long long>(1, 9007199254740991LL);
        a.current_time = current_time(in);
        if (in.ConsumeBool()) {
            a.old_key = key_bytes(in);
            a.stale_ttl = in.ConsumeIntegralInRange<long long>(0, 9007199254740991LL);
        }
        a.metadata = metadata(in);
        session_key = naming.session_key(a.name, a.key);
        made = Operation::set(naming, std::move(a));
        break;
    }
    case 1: {
        GetArgs a{key_bytes(in), key_bytes(in)};
        session_key = naming.session_key(a.name, a.key);
        made = Operation::get(naming, a);
        expect = Expect::NilStringOrError;
        break;
    }
    case 2: {
        DeleteArgs a;
        a.name = key_bytes(in);
        a.key = key_bytes(in);
        a.current_time = current_time(in);
        a.metadata = metadata(in);
        session_key = naming.session_key(a.name, a.key);
        made = Operation::remove(naming, a);
        break;
    }
    case 3: {
        ReadMetadataArgs a{key_bytes(in), key_bytes(in), key_bytes(in), current_time(in)};
        made = Operation::read_metadata(naming, a);
        expect = Expect::MapOrError;
        break;
    }
    default: {
        HandshakeArgs a;
        if (in.ConsumeBool()) a.username = key_bytes(in);
        if (in.ConsumeBool()) a.password = key_bytes(in);
        if (in.ConsumeBool()) a.database = in.ConsumeIntegralInRange<long long>(0, 1 << 20);
        a.hello = in.ConsumeBool();
        made = Operation::handshake(a);
        if (!made) {
            if (a.password || a.database || a.hello) BUG();
            return 0;
        }
        expect = Expect::VersionOrError;
        break;
    }
    }
    Operation& op = *made;
    op.set_reader_limits(limits());
    const long versions[] = {0, 60200, 70000, 70205};
    const long version = versions[in.ConsumeIntegralInRange<int>(0, 3)];

    std::optional<ReplyReader> shared;
    if (in.ConsumeBool()) shared.emplace(limits());
    std::string first_request;
    bool prefixed = false;
    try {
        for (int round = 0; round < 4; ++round) {
            auto next = op.next_request(version);
            if (!next) break;
            std::string request(*next);
            if (round == 0) {
                first_request = request;
                // a new connection of a proven pool: its handshake in the same write
                if (expect != Expect::VersionOrError && in.ConsumeBool()) {
                    HandshakeArgs hs;
                    if (in.ConsumeBool()) hs.password = key_bytes(in);
                    if (hs.password && in.ConsumeBool()) hs.username = key_bytes(in);
                    if (in.ConsumeBool()) hs.database = in.ConsumeIntegralInRange<long long>(0, 15);
                    hs.hello = in.ConsumeBool();
                    if (hs.password || hs.database || hs.hello) {
                        request = std::string(op.prefix_handshake(hs));
                        prefixed = true;
                    }
                }
            }
            const auto commands = parse_request(request);
            // Every round names the session key but Redis 6's "TTL old_key" first round
            // (which a prefixed AUTH/SELECT/HELLO may precede).
            bool ttl_round = false, named = false;
            for (const auto& command : commands) {
                ttl_round = ttl_round || command.front() == "TTL";
                for (const auto& arg : command) named = named || arg == session_key;
            }
            if (!session_key.empty() && !ttl_round && !named) BUG();
            if (op.next_request(version)) BUG();  // one round trip in flight at a time
            if (in.ConsumeBool()) {
                std::string replies;
                for (std::size_t i = 0; i < commands.size(); ++i) make_reply(in, replies, 0);
                try {
                    if (!feed_in_pieces(in, op, shared ? &*shared : nullptr, replies, true)) BUG();
                } catch (const ProtocolError&) {
                    // only "unexpected data" once finished may refuse well-formed bytes
                    BUG();
                }
            } else {
                const std::string raw = in.ConsumeRandomLengthString(256);
                if (!feed_in_pieces(in, op, shared ? &*shared : nullptr, raw, false)) break;  // still "sending"
            }
        }
    } catch (const ProtocolError&) {
        // the transport closes the connection: the operation is reused (below)
    }
    if (op.finished()) check_finished(op, expect, version, first_request, prefixed);

    // The driver reuses one operation for every call, whatever became of the last
    // one: a fresh get on it, answered well, must complete at its last byte.
    GetArgs& get = op.start_get(naming);
    get.name = key_bytes(in);
    get.key = key_bytes(in);
    try {
        const auto commands = parse_request(std::string(*op.next_request(version)));
        if (commands.size() != 1 || commands[0][0] != "GET" || commands[0][1] != naming.session_key(get.name, get.key)) {
            BUG();
        }
        std::string reply;
        make_reply(in, reply, 0);
        if (!feed_in_pieces(in, op, nullptr, reply, true) || !op.finished()) BUG();
    } catch (const ProtocolError&) {
        BUG();
    }
    const Result::Kind kind = op.result().kind;
    if (kind != Result::Kind::Error && kind != Result::Kind::Nil && kind != Result::Kind::String) BUG();
    return 0;
}

