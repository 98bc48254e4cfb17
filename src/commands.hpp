// Request encoding: RESP arrays built with hiredis's formatter, appended into
// one buffer so that a whole pipeline or transaction goes out in one write.
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
    std::string take() { count_ = 0; return std::move(bytes_); }

private:
    std::string bytes_;
    std::size_t count_ = 0;
};

// Numbers as Redis arguments: integers without a fraction, others with full precision.
std::string format_number(double value);

}  // namespace rsh
