// Request encoding: RESP arrays appended into one reusable buffer, so that a
// whole pipeline or transaction goes out in one write. Encoded here rather than
// with redisFormatCommandArgv: that one allocates per command and formats the
// lengths with sprintf, and the profile of a worker showed both per call.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>

namespace rsh {

class CommandBuffer {
public:
    // Appends one command; arguments are binary safe.
    void add(std::initializer_list<std::string_view> args);
    // Remembers where the bytes of `arg` (that very string, by address) land when a
    // later add() encodes it, so that a driver can send them from the caller's own
    // copy (marked_offset). One mark at a time; clear() forgets it.
    void mark(std::string_view arg) { mark_ = arg.data(); marked_offset_ = kNone; marked_size_ = arg.size(); }
    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
    // The offset in bytes() of the marked argument's bytes, or kNone, and their size.
    std::size_t marked_offset() const { return marked_offset_; }
    std::size_t marked_size() const { return marked_size_; }
    // Number of commands (= replies to expect).
    std::size_t count() const { return count_; }
    const std::string& bytes() const { return bytes_; }
    // Empties the buffer, keeping its capacity for the next call.
    void clear() { bytes_.clear(); count_ = 0; mark_ = nullptr; marked_offset_ = kNone; }
    // Appends another buffer's commands (and its marked argument, if this has none).
    void append(const CommandBuffer& other) {
        if (marked_offset_ == kNone && other.marked_offset_ != kNone) {
            marked_offset_ = bytes_.size() + other.marked_offset_;
            marked_size_ = other.marked_size_;
        }
        bytes_ += other.bytes_;
        count_ += other.count_;
    }
    // Frees the storage when it grew beyond keep bytes.
    void trim(std::size_t keep) { if (bytes_.capacity() > keep) std::string().swap(bytes_); }
    std::string take() { count_ = 0; mark_ = nullptr; marked_offset_ = kNone; return std::move(bytes_); }

private:
    std::string bytes_;
    std::size_t count_ = 0;
    const char* mark_ = nullptr;
    std::size_t marked_offset_ = kNone;
    std::size_t marked_size_ = 0;
};

// A number as a Redis argument (integers without a fraction, others with
// %.17g's precision), formatted into a fixed buffer: no allocation.
class NumberText {
public:
    explicit NumberText(double value);
    std::string_view view() const { return {buf_, len_}; }

private:
    char buf_[32];
    std::size_t len_ = 0;
};

inline std::string format_number(double value) { return std::string(NumberText(value).view()); }

}  // namespace rsh
