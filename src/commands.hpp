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
    // Number of commands (= replies to expect).
    std::size_t count() const { return count_; }
    const std::string& bytes() const { return bytes_; }
    // Empties the buffer, keeping its capacity for the next call.
    void clear() { bytes_.clear(); count_ = 0; }
    // Appends another buffer's commands.
    void append(const CommandBuffer& other) { bytes_ += other.bytes_; count_ += other.count_; }
    // Frees the storage when it grew beyond keep bytes.
    void trim(std::size_t keep) { if (bytes_.capacity() > keep) std::string().swap(bytes_); }
    std::string take() { count_ = 0; return std::move(bytes_); }

private:
    void append_length(char type, std::size_t n);
    std::string bytes_;
    std::size_t count_ = 0;
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
