#include "commands.hpp"

#include <charconv>
#include <cmath>

namespace rsh {

void CommandBuffer::append_length(char type, std::size_t n) {
    char buf[24];
    buf[0] = type;
    auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
    (void)ec;  // 21 digits always fit
    end[0] = '\r';
    end[1] = '\n';
    bytes_.append(buf, static_cast<std::size_t>(end + 2 - buf));
}

void CommandBuffer::add(std::initializer_list<std::string_view> args) {
    append_length('*', args.size());
    for (auto arg : args) {
        append_length('$', arg.size());
        if (mark_ && arg.data() == mark_) marked_offset_ = bytes_.size();
        bytes_.append(arg.data(), arg.size());
        bytes_.append("\r\n", 2);
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
