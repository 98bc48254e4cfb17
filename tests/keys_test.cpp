// KeyNaming against lua-resty-session 4.1.5's utils.get_name, which joins with
// fmt("%s:%s...") and treats any non-nil prefix/suffix (also "") as present.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "keys.hpp"

namespace {

using rsh::KeyNaming;
using std::optional;
using std::string;

// A transcription of upstream's get_name (utils.lua), branch by branch.
string upstream_get_name(const optional<string>& prefix, const optional<string>& suffix,
                         const string& name, const string& key, const optional<string>& subject) {
    if (prefix && suffix && subject) return *prefix + ":" + name + ":" + key + ":" + *subject + ":" + *suffix;
    if (prefix && suffix) return *prefix + ":" + name + ":" + key + ":" + *suffix;
    if (prefix && subject) return *prefix + ":" + name + ":" + key + ":" + *subject;
    if (suffix && subject) return name + ":" + key + ":" + *subject + ":" + *suffix;
    if (prefix) return *prefix + ":" + name + ":" + key;
    if (suffix) return name + ":" + key + ":" + *suffix;
    if (subject) return name + ":" + key + ":" + *subject;
    return name + ":" + key;
}

// Out of line: GCC 12 warns (falsely) about a moved-from empty optional<string> when inlined.
[[gnu::noinline]] KeyNaming naming(optional<string> prefix, optional<string> suffix) {
    KeyNaming n;
    n.prefix = std::move(prefix);
    n.suffix = std::move(suffix);
    return n;
}

const optional<string> kAffixes[] = {std::nullopt, string(), string("pre"), string("a:b")};

TEST(KeyNaming, SessionKeyPlain) {
    EXPECT_EQ(naming({}, {}).session_key("session", "abc"), "session:abc");
}

TEST(KeyNaming, SessionKeyEachCombination) {
    EXPECT_EQ(naming("p", {}).session_key("session", "abc"), "p:session:abc");
    EXPECT_EQ(naming({}, "s").session_key("session", "abc"), "session:abc:s");
    EXPECT_EQ(naming("p", "s").session_key("session", "abc"), "p:session:abc:s");
}

TEST(KeyNaming, EmptyAffixesStillTakeTheirPlace) {
    // Lua's "" is truthy: fmt("%s:%s:%s", "", name, key) == ":name:key".
    EXPECT_EQ(naming(string(), {}).session_key("n", "k"), ":n:k");
    EXPECT_EQ(naming({}, string()).session_key("n", "k"), "n:k:");
    EXPECT_EQ(naming(string(), string()).session_key("n", "k"), ":n:k:");
    EXPECT_EQ(naming(string(), string()).metadata_key("n", "a", "s"), ":n:a:s:");
}

TEST(KeyNaming, MetadataKeyEachCombination) {
    EXPECT_EQ(naming({}, {}).metadata_key("session", "aud", "sub"), "session:aud:sub");
    EXPECT_EQ(naming("p", {}).metadata_key("session", "aud", "sub"), "p:session:aud:sub");
    EXPECT_EQ(naming({}, "s").metadata_key("session", "aud", "sub"), "session:aud:sub:s");
    EXPECT_EQ(naming("p", "s").metadata_key("session", "aud", "sub"), "p:session:aud:sub:s");
}

TEST(KeyNaming, MatchesUpstreamForEveryAffixCombination) {
    for (const auto& prefix : kAffixes) {
        for (const auto& suffix : kAffixes) {
            const KeyNaming n = naming(prefix, suffix);
            SCOPED_TRACE("prefix=" + prefix.value_or("<nil>") + " suffix=" + suffix.value_or("<nil>"));
            EXPECT_EQ(n.session_key("session", "key1"),
                      upstream_get_name(prefix, suffix, "session", "key1", std::nullopt));
            EXPECT_EQ(n.metadata_key("session", "aud", "sub"),
                      upstream_get_name(prefix, suffix, "session", "aud", string("sub")));
            // Empty name/key/audience/subject parts are joined as they are.
            EXPECT_EQ(n.session_key("", ""), upstream_get_name(prefix, suffix, "", "", std::nullopt));
            EXPECT_EQ(n.metadata_key("", "", ""), upstream_get_name(prefix, suffix, "", "", string()));
        }
    }
}

TEST(KeyNaming, BinaryPartsAreKeptByteForByte) {
    const string nul("a\0b", 3);
    const string crlf = "x\r\ny";
    string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);

    const KeyNaming n = naming(string("p\0", 2), string("\xff\r\n", 3));
    const string got = n.session_key(nul, crlf);
    EXPECT_EQ(got, string("p\0", 2) + ":" + nul + ":" + crlf + ":" + string("\xff\r\n", 3));
    EXPECT_EQ(got.size(), 2u + 1 + 3 + 1 + 4 + 1 + 3);

    const string meta = n.metadata_key(all, nul, all);
    EXPECT_EQ(meta, upstream_get_name(string("p\0", 2), string("\xff\r\n", 3), all, nul, all));
    EXPECT_EQ(meta.size(), 2u + 1 + 256 + 1 + 3 + 1 + 256 + 1 + 3);
}

TEST(KeyNaming, PartsContainingSeparatorsAreNotEscaped) {
    EXPECT_EQ(naming("a:b", {}).session_key("n:m", "k:"), "a:b:n:m:k:");
}

}  // namespace
