// RESP2 reply headers checked as bytes arrive, before the codec buffers them:
// a bulk length, an element count or a nesting depth beyond our limits fails at
// once (no buffering toward a 1 TB "bulk string"), whatever hiredis's version.
// Also strict where hiredis versions differ: lengths and integers must be
// canonical numbers, a bulk string must end in CRLF, only RESP2 type bytes.
#pragma once

#include <cstddef>
#include <string>

namespace rsh {

constexpr int kMaxDepth = 16;

struct ReaderLimits {
    // Bytes of data one reply may carry: the contents of its bulk strings and
    // status or error lines. RESP framing (type bytes, length and integer lines,
    // CRLFs) is not counted, so a value of exactly this size reads back; framing is
    // bounded anyway (at most ~25 bytes per element, elements per reply below).
    // The configuration's max_reply_size sets it; the default is Redis's own
    // proto-max-bulk-len (512 MiB): every value Redis accepts reads back.
    std::size_t max_reply_bytes = 512u << 20;
    // Elements of all arrays in one reply together (each costs a pointer up front).
    long long max_array_elements = 1 << 20;
    // Arrays inside arrays: 8 levels (the most hiredis 0.14 parses; 1.x has no
    // limit). At most kMaxDepth.
    int max_depth = 8;
};

class ReplyScanner {
public:
    explicit ReplyScanner(const ReaderLimits& limits);

    // Follows the replies in data; throws ProtocolError at the first byte that
    // breaks the protocol or a limit. Unusable after a throw.
    void scan(const char* data, std::size_t len);
    // True when the bytes so far end exactly after a complete reply (or are none).
    bool between_replies() const { return state_ == State::Type && depth_ == 0; }

private:
    enum class State : unsigned char { Type, Header, Line, Bulk, BulkCr, BulkLf };

    void count(std::size_t bytes);
    void header_done();
    void element_done();
    [[noreturn]] void fail(const std::string& why);

    ReaderLimits limits_;
    State state_ = State::Type;
    char kind_ = 0;             // type byte of the line being read
    bool cr_ = false;           // the previous line byte was '\r'
    char header_[24];           // digits of a length or integer line
    std::size_t header_len_ = 0;
    unsigned long long bulk_left_ = 0;
    std::size_t reply_bytes_ = 0;      // data bytes of the reply being read
    long long reply_elements_ = 0;     // declared by its arrays
    long long open_[kMaxDepth];        // elements still to come, per open array
    int depth_ = 0;                    // arrays open
};

}  // namespace rsh
