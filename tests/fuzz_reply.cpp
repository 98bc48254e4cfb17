// libFuzzer target: arbitrary bytes as Redis replies, fed in fragments to a
// ReplyReader and to Operations (read_metadata, set transaction, handshake).
// The only exception allowed out of the codec is ProtocolError.
#include <cstddef>
#include <cstdint>
#include <string>

#include "errors.hpp"
#include "operation.hpp"
#include "resp.hpp"

namespace {

using namespace rsh;

// Walks the data in pieces of `piece` bytes.
template <class Sink>
void in_pieces(const char* data, std::size_t size, std::size_t piece, Sink sink) {
    for (std::size_t at = 0; at < size; at += piece) {
        const std::size_t n = size - at < piece ? size - at : piece;
        if (!sink(data + at, n)) return;
    }
}

void fuzz_reader(const char* data, std::size_t size, std::size_t piece, ReaderLimits limits) {
    ReplyReader reader(limits);
    try {
        in_pieces(data, size, piece, [&](const char* p, std::size_t n) {
            reader.feed(p, n);
            while (ReplyPtr reply = reader.next()) {
                // Touch the tree: every array slot must be filled once a reply is complete.
                std::size_t stack_guard = 0;
                const Reply* r = reply.get();
                while (r && r->type == Reply::Type::Array && !r->elements.empty() && ++stack_guard < 64) {
                    for (const auto& e : r->elements) {
                        if (!e) __builtin_trap();
                    }
                    r = r->elements.back().get();
                }
            }
            return true;
        });
        (void)reader.has_pending_bytes();
    } catch (const ProtocolError&) {
    }
}

// Drives an operation over all round trips, feeding the data as the server's replies.
void fuzz_operation(Operation op, long version, const char* data, std::size_t size, std::size_t piece) {
    try {
        if (!op.next_request(version)) return;
        bool waiting = true;
        in_pieces(data, size, piece, [&](const char* p, std::size_t n) {
            if (!waiting) {
                if (!op.next_request(version)) {
                    // Finished: any further byte must be refused.
                    try {
                        op.feed(p, n);
                    } catch (const ProtocolError&) {
                        return false;
                    }
                    __builtin_trap();
                }
            }
            waiting = !op.feed(p, n);
            return true;
        });
        if (op.finished()) {
            const Result& r = op.result();
            (void)r.text.size();
            (void)r.map.size();
        }
    } catch (const ProtocolError&) {
    }
}

KeyNaming naming() {
    KeyNaming n;
    n.prefix = "p";
    return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t piece = 1 + (bytes[0] & 0x3f);     // 1..64 byte fragments
    const bool old_redis = (bytes[0] & 0x40) != 0;
    const char* data = reinterpret_cast<const char*>(bytes + 1);
    --size;

    fuzz_reader(data, size, piece, ReaderLimits{});
    ReaderLimits tight;
    tight.max_reply_bytes = 256;
    tight.max_array_elements = 8;
    fuzz_reader(data, size, piece, tight);

    ReadMetadataArgs read;
    read.name = "session";
    read.audience = "aud";
    read.subject = "sub";
    read.current_time = 1700000000;
    fuzz_operation(Operation::read_metadata(naming(), read), 70000, data, size, piece);

    SetArgs set;
    set.name = "session";
    set.key = "new";
    set.value = "value";
    set.ttl = 3600;
    set.current_time = 1700000000;
    set.old_key = "old";
    set.stale_ttl = 10;
    Metadata meta;
    meta.entries = {{"aud", "sub"}};
    set.metadata = meta;
    fuzz_operation(Operation::set(naming(), set), old_redis ? 60200 : 70000, data, size, piece);

    HandshakeArgs hs;
    hs.username = "user";
    hs.password = "pass";
    hs.database = 1;
    fuzz_operation(*Operation::handshake(hs), 0, data, size, piece);
    return 0;
}
