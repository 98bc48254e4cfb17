// ReplyReader: hiredis's reader with our reply objects, fed arbitrary fragments.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "errors.hpp"
#include "resp.hpp"

#include <hiredis/hiredis.h>  // HIREDIS_MAJOR: what refuses a RESP3 reply

namespace {

using rsh::ProtocolError;
using rsh::ReaderLimits;
using rsh::Reply;
using rsh::ReplyPtr;
using rsh::ReplyReader;
using std::string;

// A canonical text form of a reply tree, to compare trees in one EXPECT_EQ.
string dump(const Reply& r) {
    switch (r.type) {
    case Reply::Type::String: return "$" + std::to_string(r.str.size()) + ":" + r.str;
    case Reply::Type::Status: return "+" + r.str;
    case Reply::Type::Error: return "-" + r.str;
    case Reply::Type::Integer: return ":" + std::to_string(r.integer);
    case Reply::Type::Nil: return "nil";
    case Reply::Type::Array: {
        string out = "[";
        for (const auto& e : r.elements) {
            out += e ? dump(*e) : string("<null>");
            out += ",";
        }
        return out + "]";
    }
    }
    return "?";
}

// Feeds `wire` in pieces whose sizes come from `next_size`, collecting every reply.
template <class NextSize>
std::vector<string> parse(const string& wire, NextSize next_size, ReaderLimits limits = {}) {
    ReplyReader reader(limits);
    std::vector<string> out;
    std::size_t at = 0;
    while (at < wire.size()) {
        std::size_t n = std::min(next_size(), wire.size() - at);
        reader.feed(wire.data() + at, n);
        at += n;
        while (ReplyPtr reply = reader.next()) out.push_back(dump(*reply));
    }
    EXPECT_FALSE(reader.has_pending_bytes());
    return out;
}

std::vector<string> parse_whole(const string& wire) {
    return parse(wire, [&] { return wire.size(); });
}
std::vector<string> parse_bytewise(const string& wire) {
    return parse(wire, [] { return std::size_t{1}; });
}
std::vector<string> parse_random(const string& wire, unsigned seed, std::size_t max_piece) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::size_t> size(1, max_piece);
    return parse(wire, [&] { return size(rng); });
}

string binary_payload(std::size_t n) {
    string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + 7) & 0xff);
    return s;
}

struct Case {
    string wire;
    string expected;
};

std::vector<Case> cases() {
    const string all = binary_payload(256);
    const string mib = binary_payload(1 << 20);
    return {
        {"+OK\r\n", "+OK"},
        {"+QUEUED\r\n", "+QUEUED"},
        {"-ERR unknown command 'FOO'\r\n", "-ERR unknown command 'FOO'"},
        {"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
         "-WRONGTYPE Operation against a key holding the wrong kind of value"},
        {":0\r\n", ":0"},
        {":-2\r\n", ":-2"},
        {":9223372036854775807\r\n", ":9223372036854775807"},
        {"$5\r\nhello\r\n", "$5:hello"},
        {"$0\r\n\r\n", "$0:"},
        {string("$6\r\na\0b\r\nc\r\n", 12), string("$6:a\0b\r\nc", 9)},
        {"$256\r\n" + all + "\r\n", "$256:" + all},
        {"$1048576\r\n" + mib + "\r\n", "$1048576:" + mib},
        {"$-1\r\n", "nil"},
        {"*-1\r\n", "nil"},
        {"*0\r\n", "[]"},
        {"*3\r\n$3\r\nkey\r\n$10\r\n1795665137\r\n:1\r\n", "[$3:key,$10:1795665137,:1,]"},
        {"*2\r\n*2\r\n+OK\r\n$-1\r\n*1\r\n*0\r\n", "[[+OK,nil,],[[],],]"},
        {"*4\r\n+OK\r\n:1\r\n-ERR in exec\r\n*-1\r\n", "[+OK,:1,-ERR in exec,nil,]"},
    };
}

string all_wire() {
    string wire;
    for (const auto& c : cases()) wire += c.wire;
    return wire;
}

std::vector<string> all_expected() {
    std::vector<string> out;
    for (const auto& c : cases()) out.push_back(c.expected);
    return out;
}

TEST(ReplyReader, EachReplyWhole) {
    for (const auto& c : cases()) {
        EXPECT_EQ(parse_whole(c.wire), std::vector<string>{c.expected}) << c.wire.substr(0, 40);
    }
}

TEST(ReplyReader, EachReplyByteByByte) {
    for (const auto& c : cases()) {
        if (c.wire.size() > 4096) continue;  // the 1 MiB one is covered by PipelinedByteByByte
        EXPECT_EQ(parse_bytewise(c.wire), std::vector<string>{c.expected}) << c.wire.substr(0, 40);
    }
}

TEST(ReplyReader, PipelinedWhole) { EXPECT_EQ(parse_whole(all_wire()), all_expected()); }

TEST(ReplyReader, PipelinedByteByByte) { EXPECT_EQ(parse_bytewise(all_wire()), all_expected()); }

TEST(ReplyReader, PipelinedRandomFragments) {
    const string wire = all_wire();
    const auto expected = all_expected();
    for (unsigned seed = 1; seed <= 20; ++seed) {
        SCOPED_TRACE("seed " + std::to_string(seed));
        EXPECT_EQ(parse_random(wire, seed, 7), expected);
        EXPECT_EQ(parse_random(wire, seed * 101, 5000), expected);
    }
}

TEST(ReplyReader, NothingUntilComplete) {
    ReplyReader reader;
    EXPECT_EQ(reader.next(), nullptr);
    reader.feed("$5\r\nhel", 7);
    EXPECT_EQ(reader.next(), nullptr);
    EXPECT_TRUE(reader.has_pending_bytes());
    reader.feed("lo\r\n", 4);
    ReplyPtr r = reader.next();
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(dump(*r), "$5:hello");
    EXPECT_FALSE(reader.has_pending_bytes());
    EXPECT_EQ(reader.next(), nullptr);
}

TEST(ReplyReader, HasPendingBytesAfterOneOfTwoReplies) {
    ReplyReader reader;
    EXPECT_FALSE(reader.has_pending_bytes());
    reader.feed("+OK\r\n+O", 7);
    ReplyPtr r = reader.next();
    ASSERT_NE(r, nullptr);
    EXPECT_TRUE(reader.has_pending_bytes());
    EXPECT_EQ(reader.next(), nullptr);
    reader.feed("K\r\n", 3);
    ASSERT_NE(reader.next(), nullptr);
    EXPECT_FALSE(reader.has_pending_bytes());
}

TEST(ReplyReader, ZeroLengthFeedIsHarmless) {
    ReplyReader reader;
    reader.feed("", 0);
    EXPECT_EQ(reader.next(), nullptr);
    EXPECT_FALSE(reader.has_pending_bytes());
}

void expect_protocol_error(const string& wire, const string& needle, ReaderLimits limits = {}) {
    // Whole and byte by byte: the error comes either way, mentioning `needle`.
    for (std::size_t piece : {wire.size(), std::size_t{1}}) {
        ReplyReader reader(limits);
        try {
            for (std::size_t at = 0; at < wire.size(); at += piece) {
                reader.feed(wire.data() + at, std::min(piece, wire.size() - at));
                while (reader.next()) {
                }
            }
            ADD_FAILURE() << "no ProtocolError for " << wire.substr(0, 40) << " piece " << piece;
        } catch (const ProtocolError& e) {
            EXPECT_NE(string(e.what()).find(needle), string::npos) << e.what();
            EXPECT_EQ(string(e.what()).rfind("protocol error", 0), 0u) << e.what();
        }
        // Unusable afterwards.
        EXPECT_THROW(reader.next(), ProtocolError);
        EXPECT_THROW(reader.feed("+OK\r\n", 5), ProtocolError);
    }
}

TEST(ReplyReader, BadTypeByte) {
    expect_protocol_error("!oops\r\n", "reply type byte");
    expect_protocol_error("+OK\r\nx\r\n", "reply type byte");
}

TEST(ReplyReader, BadLengths) {
    expect_protocol_error("$abc\r\n", "Bad bulk string length");
    expect_protocol_error("$-5\r\n", "out of range");
    expect_protocol_error("*abc\r\n", "Bad multi-bulk length");
    expect_protocol_error("*-5\r\n", "out of range");
    expect_protocol_error("*3000000000\r\n", "out of range");
    expect_protocol_error(":12x\r\n", "Bad integer value");
}

// RESP3 replies never come on a RESP2 connection: hiredis 0.14 refuses their type
// byte, 1.x parses them and our callbacks refuse them; either way a protocol error.
TEST(ReplyReader, Resp3TypesRefused) {
    const std::vector<std::pair<string, string>> resp3 = {
        {",1.5\r\n", "double"},
        {"#t\r\n", "boolean"},
        {"_\r\n", "null"},
        {"%1\r\n+a\r\n+b\r\n", "map"},
        {"~1\r\n:1\r\n", "set"},
        {">1\r\n+x\r\n", "push"},
        {"(12345678901234567890\r\n", "big number"},
        {"=7\r\ntxt:abc\r\n", "verbatim string"},
        {"*2\r\n:1\r\n,2.5\r\n", "double"},  // nested: the array is freed
        {"*1\r\n*1\r\n#f\r\n", "boolean"},
    };
    for (const auto& [wire, name] : resp3) {
        SCOPED_TRACE(wire);
#if HIREDIS_MAJOR >= 1
        expect_protocol_error(wire, "RESP3 " + name + " reply type");
#else
        expect_protocol_error(wire, "reply type byte");
#endif
    }
    // Attributes: neither 0.14 nor 1.2 knows their type byte.
    expect_protocol_error("|1\r\n+a\r\n+b\r\n+OK\r\n", "reply type byte");
}

TEST(ReplyReader, MaxReplyBytes) {
    ReaderLimits limits;
    limits.max_reply_bytes = 64;
    expect_protocol_error("$100\r\n" + string(100, 'x') + "\r\n", "64 bytes", limits);
}

TEST(ReplyReader, ValueOfExactlyMaxReplyBytesReadsBack) {
    ReaderLimits limits;
    limits.max_reply_bytes = 1024;
    const string value(1024, 'v');
    const string wire = "$1024\r\n" + value + "\r\n";
    for (std::size_t piece : {wire.size(), std::size_t{1}, std::size_t{7}}) {
        ReplyReader reader(limits);
        ReplyPtr r;
        for (std::size_t at = 0; at < wire.size() && !r; at += piece) {
            reader.feed(wire.data() + at, std::min(piece, wire.size() - at));
            r = reader.next();
        }
        ASSERT_NE(r, nullptr) << piece;
        EXPECT_EQ(r->str, value);
        EXPECT_FALSE(reader.has_pending_bytes());
    }
    expect_protocol_error("$1025\r\n" + string(1025, 'v') + "\r\n", "reply larger than 1024 bytes", limits);
}

TEST(ReplyReader, MaxReplyBytesCountsPerReply) {
    ReaderLimits limits;
    limits.max_reply_bytes = 64;
    ReplyReader reader(limits);
    const string one = "$40\r\n" + string(40, 'y') + "\r\n";  // 47 bytes
    for (int i = 0; i < 10; ++i) {
        reader.feed(one.data(), one.size());
        ReplyPtr r = reader.next();
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->str.size(), 40u);
    }
}

TEST(ReplyReader, MaxArrayElements) {
    ReaderLimits limits;
    limits.max_array_elements = 3;
    EXPECT_EQ(parse(string("*3\r\n:1\r\n:2\r\n:3\r\n"), [] { return std::size_t{1}; }, limits),
              std::vector<string>{"[:1,:2,:3,]"});
    expect_protocol_error("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", "more than 3 elements", limits);
    expect_protocol_error("*1\r\n*5\r\n", "more than 3 elements", limits);
}

string nested(int depth) {
    string s;
    for (int i = 0; i < depth; ++i) s += "*1\r\n";
    return s + ":1\r\n";
}

TEST(ReplyReader, NestingWithinHiredisLimit) {
    string expected = ":1";
    for (int i = 0; i < 8; ++i) expected = "[" + expected + ",]";
    EXPECT_EQ(parse_bytewise(nested(8)), std::vector<string>{expected});
}

TEST(ReplyReader, NestingTooDeep) {
    expect_protocol_error(nested(9), "depth");
    expect_protocol_error(nested(40), "depth");
}

TEST(ReplyReader, MovedReaderKeepsWorking) {
    ReplyReader a;
    a.feed("+O", 2);
    ReplyReader b(std::move(a));
    b.feed("K\r\n", 3);
    ReplyPtr r = b.next();
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(dump(*r), "+OK");
}

// hiredis keeps the tasks of a reply parsed in pieces, each holding what the
// reader's callbacks share (its privdata): a move must not leave them pointing
// into the reader it moved from (ASan sees such a use after free).
TEST(ReplyReader, MovedMidArrayFinishesTheReply) {
    ReaderLimits limits;
    limits.max_array_elements = 4;  // (counted over the whole reply)
    auto a = std::make_unique<ReplyReader>(limits);
    a->feed("*2\r\n*2\r\n:1\r\n", 12);  // the outer array and half the inner one
    EXPECT_EQ(a->next(), nullptr);
    ReplyReader b(std::move(*a));
    a.reset();
    b.feed(":2\r\n$1\r\nx\r\n", 11);
    ReplyPtr r = b.next();
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(dump(*r), "[[:1,:2,],$1:x,]");
    EXPECT_THROW(b.feed("*5\r\n", 4), ProtocolError);  // and its limits still hold
}

}  // namespace
