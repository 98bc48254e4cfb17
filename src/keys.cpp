#include "keys.hpp"

#include <initializer_list>

namespace rsh {
namespace {

// Parts joined with ':'. An empty prefix or suffix still takes its place, as
// upstream's fmt("%s:%s", prefix, ...) does.
void join(std::string& out, const KeyNaming& naming, std::initializer_list<std::string_view> parts) {
    out.clear();
    if (naming.prefix) {
        out += *naming.prefix;
        out += ':';
    }
    const char* separator = "";
    for (auto part : parts) {
        out += separator;
        out.append(part.data(), part.size());
        separator = ":";
    }
    if (naming.suffix) {
        out += ':';
        out += *naming.suffix;
    }
}

}  // namespace

void KeyNaming::session_key_into(std::string& out, std::string_view name, std::string_view key) const {
    join(out, *this, {name, key});
}

void KeyNaming::metadata_key_into(std::string& out, std::string_view name, std::string_view audience,
                                  std::string_view subject) const {
    join(out, *this, {name, audience, subject});
}

std::string KeyNaming::session_key(std::string_view name, std::string_view key) const {
    std::string out;
    session_key_into(out, name, key);
    return out;
}

std::string KeyNaming::metadata_key(std::string_view name, std::string_view audience,
                                    std::string_view subject) const {
    std::string out;
    metadata_key_into(out, name, audience, subject);
    return out;
}

}  // namespace rsh
