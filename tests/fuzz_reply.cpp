// libFuzzer target: arbitrary bytes as Redis replies, fed in fragments to
// a ReplyReader (scanner + hiredis). The only exception allowed out of the codec
// is ProtocolError; every reply handed out is a whole tree that re-encodes to
// the very bytes it was parsed from. Limits are small, so that no input can make
// the harness allocate much (fast, bounded memory).
// The same bytes, as a sentinel's answer to SENTINEL MASTER, must give the same
// answer (or the same ProtocolError) on the query's in-place fast path as
// through the reader (the path of a query after AUTH). And as what a sentinel
// sends a subscription (sentinel_watch): only ProtocolError or WatchRefused come
// out, and the events and PING answers counted do not depend on the fragments.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "errors.hpp"
#include "resp.hpp"
#include "sentinel.hpp"
#include "sentinel_watch.hpp"

// A broken invariant: says which, then crashes (libFuzzer saves the input).
#define BUG() (std::fprintf(stderr, "invariant broken at %s:%d\n", __FILE__, __LINE__), __builtin_trap())

namespace {

using namespace rsh;

void encode(const Reply& r, std::string& out, bool& has_nil) {
    switch (r.type) {
    case Reply::Type::String:
        out += "$" + std::to_string(r.str.size()) + "\r\n" + r.str + "\r\n";
        break;
    case Reply::Type::Status: out += "+" + r.str + "\r\n"; break;
    case Reply::Type::Error: out += "-" + r.str + "\r\n"; break;
    case Reply::Type::Integer: out += ":" + std::to_string(r.integer) + "\r\n"; break;
    case Reply::Type::Nil:
        out += "$-1\r\n";
        has_nil = true;
        break;
    case Reply::Type::Array:
        out += "*" + std::to_string(r.elements.size()) + "\r\n";
        for (const auto& e : r.elements) {
            if (!e) BUG();  // a complete reply has every slot filled
            encode(*e, out, has_nil);
        }
        break;
    }
}

// Calls feed(at, n) for each piece of the input, in order: [at, at + n) of at
// most `piece` bytes.
template <typename Feed>
void in_pieces(std::size_t size, std::size_t piece, Feed feed) {
    for (std::size_t at = 0; at < size; at += piece) feed(at, size - at < piece ? size - at : piece);
}

// Canonical numbers and CRLFs are enforced, so each reply handed out re-encodes
// to exactly the bytes it came from (a nil, "$-1" or "*-1", to as many bytes).
void fuzz_reader(const char* data, std::size_t size, std::size_t piece, const ReaderLimits& limits) {
    ReplyReader reader(limits);
    std::size_t consumed = 0;  // input bytes of the replies handed out
    try {
        in_pieces(size, piece, [&](std::size_t at, std::size_t n) {
            reader.feed(data + at, n);
            while (ReplyPtr reply = reader.next()) {
                std::string wire;
                bool has_nil = false;
                encode(*reply, wire, has_nil);
                if (consumed + wire.size() > at + n) BUG();
                if (!has_nil && wire.compare(0, wire.size(), data + consumed, wire.size()) != 0) BUG();
                consumed += wire.size();
            }
        });
        if (reader.between_replies() && (consumed != size || reader.has_pending_bytes())) BUG();
    } catch (const ProtocolError&) {
    }
}

// Feeds data in pieces; "throws" when a ProtocolError came out (the query is
// then unusable), else whether the query finished.
std::string feed_query(SentinelQuery& query, const char* data, std::size_t size, std::size_t piece) {
    try {
        bool done = false;
        in_pieces(size, piece, [&](std::size_t at, std::size_t n) { done = query.feed(data + at, n); });
        return done ? "done" : "pending";
    } catch (const ProtocolError&) {
        return "throws";
    }
}

void fuzz_sentinel_master(const char* data, std::size_t size, std::size_t piece) {
    const std::optional<std::string> none, password("pw");
    SentinelQuery fast(SentinelQuery::Ask::Master, "mymaster", none, none, false);
    SentinelQuery read(SentinelQuery::Ask::Master, "mymaster", none, password, true);
    if (read.feed("+OK\r\n", 5)) BUG();
    const std::string fast_state = feed_query(fast, data, size, piece);
    const std::string read_state = feed_query(read, data, size, piece);
    if (fast_state != read_state) BUG();
    if (fast_state != "done") return;
    const SentinelAnswer& a = fast.answer();
    const SentinelAnswer& b = read.answer();
    if (a.kind != b.kind || a.address != b.address || a.config_epoch != b.config_epoch ||
        a.failover_in_progress != b.failover_in_progress || a.error != b.error) {
        BUG();
    }
}

// Feeds data in pieces to a subscription: "fails" on an exception allowed out
// of it (the connection is then closed: which one may depend on the pieces, as
// the reader checks all the bytes fed at once), else the counts and the state.
std::string feed_watch(const char* data, std::size_t size, std::size_t piece) {
    SentinelWatch watch;
    watch.subscribe(std::nullopt, std::string("pw"));
    std::size_t events = 0, pongs = 0;
    try {
        in_pieces(size, piece, [&](std::size_t at, std::size_t n) {
            const SentinelWatch::Progress p = watch.feed(data + at, n);
            events += p.events;
            pongs += p.pongs;
            if ((p.events || p.pongs) && !watch.subscribed()) BUG();  // counted only once subscribed
        });
    } catch (const ProtocolError&) {
        return "fails";
    } catch (const WatchRefused&) {
        return "fails";
    }
    return std::to_string(events) + "/" + std::to_string(pongs) + (watch.subscribed() ? "+" : "-");
}

void fuzz_sentinel_watch(const char* data, std::size_t size, std::size_t piece) {
    if (feed_watch(data, size, piece) != feed_watch(data, size, size ? size : 1)) BUG();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t piece = 1 + (bytes[0] & 0x3f);  // 1..64 byte fragments
    const bool tight = (bytes[0] & 0x40) != 0;
    const char* data = reinterpret_cast<const char*>(bytes + 1);
    --size;

    ReaderLimits limits;  // room for anything a fuzz input holds (make fuzz: -max_len=1024), no more
    limits.max_reply_bytes = 1 << 16;
    limits.max_array_elements = 1 << 10;
    if (tight) {  // limits crossed often: the failure paths
        limits.max_reply_bytes = 256;
        limits.max_array_elements = 8;
        limits.max_depth = 3;
    }
    fuzz_reader(data, size, piece, limits);
    fuzz_sentinel_master(data, size, piece);
    fuzz_sentinel_watch(data, size, piece);
    return 0;
}
