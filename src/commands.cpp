#include "commands.hpp"

#include <charconv>
#include <cmath>
#include <cstring>

namespace rsh {

namespace {

// Digits of n in decimal.
std::size_t digits(std::size_t n) {
    std::size_t count = 1;
    while (n >= 10) {
        n /= 10;
        ++count;
    }
    return count;
}

// Writes "<type><n>\r\n" at out (digits(n) + 3 bytes); returns the end.
char* put_length(char* out, char type, std::size_t n) {
    *out++ = type;
    out = std::to_chars(out, out + 20, n).ptr;  // 20 digits always fit
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

}  // namespace

// The command's size first, then one resize and plain writes: appending piece by
// piece cost three std::string appends per argument, the largest part of
// building a set with metadata in a worker's profile.
void CommandBuffer::add(std::initializer_list<std::string_view> args) {
    std::size_t size = digits(args.size()) + 3;
    for (auto arg : args) size += digits(arg.size()) + 5 + arg.size();
    const std::size_t start = bytes_.size();
    bytes_.resize(start + size);
    char* out = bytes_.data() + start;
    out = put_length(out, '*', args.size());
    for (auto arg : args) {
        out = put_length(out, '$', arg.size());
        if (mark_ && arg.data() == mark_) marked_offset_ = static_cast<std::size_t>(out - bytes_.data());
        if (!arg.empty()) std::memcpy(out, arg.data(), arg.size());
        out += arg.size();
        *out++ = '\r';
        *out++ = '\n';
    }
    ++count_;
}

NumberText::NumberText(double value) {
    std::to_chars_result r;
    if (std::floor(value) == value && std::fabs(value) < 9007199254740992.0) {
        r = std::to_chars(buf_, buf_ + sizeof buf_, static_cast<long long>(value));
    } else {
        r = std::to_chars(buf_, buf_ + sizeof buf_, value, std::chars_format::general, 17);
    }
    len_ = static_cast<std::size_t>(r.ptr - buf_);
}

}  // namespace rsh
