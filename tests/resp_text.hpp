// RESP text for the unit tests: a command as clients send it (an array of
// bulk strings), and a bulk string.
#pragma once

#include <initializer_list>
#include <string>

namespace rsh_test {

inline std::string cmd(std::initializer_list<std::string> args) {
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return out;
}

inline std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

}  // namespace rsh_test
