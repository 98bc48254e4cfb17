#include "keys.hpp"

#include <initializer_list>

namespace rsh {
namespace {

// Parts joined with ':'. An empty prefix or suffix still takes its place, as
// upstream's fmt("%s:%s", prefix, ...) does.
std::string join(const KeyNaming& naming, std::initializer_list<std::string_view> parts) {
    std::string out;
    if (naming.prefix) {
        out = *naming.prefix;
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
    return out;
}

}  // namespace

std::string KeyNaming::session_key(std::string_view name, std::string_view key) const {
    return join(*this, {name, key});
}

std::string KeyNaming::metadata_key(std::string_view name, std::string_view audience,
                                    std::string_view subject) const {
    return join(*this, {name, audience, subject});
}

}  // namespace rsh
