// Redis key names, byte-identical to lua-resty-session's utils.get_name.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace rsh {

struct KeyNaming {
    std::optional<std::string> prefix, suffix;

    // [prefix:]name:key[:suffix]
    std::string session_key(std::string_view name, std::string_view key) const;
    // [prefix:]name:audience:subject[:suffix]
    std::string metadata_key(std::string_view name, std::string_view audience,
                             std::string_view subject) const;

    // The same names written into out (replacing its content, reusing its capacity).
    void session_key_into(std::string& out, std::string_view name, std::string_view key) const;
    void metadata_key_into(std::string& out, std::string_view name, std::string_view audience,
                           std::string_view subject) const;
};

}  // namespace rsh
