// RESP decoding: hiredis's redisReader with our own reply objects, no I/O.
// Fed arbitrary byte fragments; hands out whole replies. Our ReplyScanner sees
// every byte first and enforces the limits at the headers.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "resp_scanner.hpp"

struct redisReader;

namespace rsh {

struct Reply;
struct ReplyParseState;

// Gives a reply (and its elements) back to this thread's spare replies, which
// the next replies parsed reuse with their buffers: a steady stream of calls
// allocates no reply objects. Large ones are freed.
struct ReplyRecycler {
    void operator()(Reply* reply) const noexcept;
};
using ReplyPtr = std::unique_ptr<Reply, ReplyRecycler>;

struct Reply {
    enum class Type { String, Array, Integer, Nil, Status, Error };
    Type type = Type::Nil;
    std::string str;  // String, Status, Error
    long long integer = 0;
    std::vector<ReplyPtr> elements;

    bool is_error() const { return type == Type::Error; }
};

class ReplyReader {
public:
    explicit ReplyReader(ReaderLimits limits = {});
    ~ReplyReader();
    ReplyReader(const ReplyReader&) = delete;
    ReplyReader& operator=(const ReplyReader&) = delete;
    ReplyReader(ReplyReader&&) noexcept = default;
    ReplyReader& operator=(ReplyReader&&) noexcept = default;

    // Checks the bytes (ReplyScanner), then buffers them; throws ProtocolError
    // at once when they break the protocol or a limit.
    void feed(const char* data, std::size_t len);
    // The next complete reply, or nullptr when more bytes are needed.
    // Throws ProtocolError on malformed input; the reader is then unusable.
    ReplyPtr next();
    // True when bytes beyond the replies handed out are buffered.
    bool has_pending_bytes() const;
    // True when the bytes fed end exactly after a complete reply (or are none).
    bool between_replies() const { return scanner_.between_replies(); }
    // True once a malformed reply or a limit made the reader unusable.
    bool failed() const { return failed_; }
    // The most bytes this reader has buffered at once (what its buffer grew to).
    std::size_t buffered_capacity() const { return peak_buffered_; }
    // New limits for the replies to come; false (nothing changed) unless the
    // reader is usable and between replies.
    bool set_limits(const ReaderLimits& limits);

private:
    struct ReaderDeleter { void operator()(redisReader* r) const; };
    struct StateDeleter { void operator()(ReplyParseState* s) const; };
    std::unique_ptr<redisReader, ReaderDeleter> reader_;
    std::unique_ptr<ReplyParseState, StateDeleter> state_;  // what its callbacks share (their privdata)
    ReaderLimits limits_;
    ReplyScanner scanner_;
    std::size_t peak_buffered_ = 0;
    bool failed_ = false;
};

}  // namespace rsh
