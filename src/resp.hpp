// RESP decoding: hiredis's redisReader with our own reply objects, no I/O.
// Fed arbitrary byte fragments; hands out whole replies.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

struct redisReader;

namespace rsh {

struct Reply {
    enum class Type { String, Array, Integer, Nil, Status, Error };
    Type type = Type::Nil;
    std::string str;  // String, Status, Error
    long long integer = 0;
    std::vector<std::unique_ptr<Reply>> elements;

    bool is_error() const { return type == Type::Error; }
};
using ReplyPtr = std::unique_ptr<Reply>;

struct ReaderLimits {
    // Bytes one reply may take on the wire (Redis caps a bulk string at 512 MiB).
    std::size_t max_reply_bytes = (512u << 20) + 4096;
    // Elements one array may declare (each costs a pointer up front).
    long long max_array_elements = 1 << 20;
    // Arrays nest at most 8 deep (hiredis 0.14's stop, kept on 1.x by resp.cpp).
};

class ReplyReader {
public:
    explicit ReplyReader(ReaderLimits limits = {});
    ~ReplyReader();
    ReplyReader(const ReplyReader&) = delete;
    ReplyReader& operator=(const ReplyReader&) = delete;
    ReplyReader(ReplyReader&&) noexcept = default;
    ReplyReader& operator=(ReplyReader&&) noexcept = default;

    // Buffers bytes; throws ProtocolError when a limit is crossed.
    void feed(const char* data, std::size_t len);
    // The next complete reply, or nullptr when more bytes are needed.
    // Throws ProtocolError on malformed input; the reader is then unusable.
    ReplyPtr next();
    // True when bytes beyond the replies handed out are buffered.
    bool has_pending_bytes() const;
    // True once a malformed reply or a limit made the reader unusable.
    bool failed() const { return failed_; }
    // The most bytes this reader has buffered at once (what its buffer grew to).
    std::size_t buffered_capacity() const { return peak_buffered_; }

private:
    struct ReaderDeleter { void operator()(redisReader* r) const; };
    std::unique_ptr<redisReader, ReaderDeleter> reader_;
    ReaderLimits limits_;
    std::size_t bytes_in_reply_ = 0;  // fed since the last complete reply
    std::size_t peak_buffered_ = 0;
    bool failed_ = false;
};

}  // namespace rsh
