// ReplyScanner: limits enforced at the headers as bytes arrive, and the strict
// RESP2 rules that make our behaviour independent of hiredis's version.
#include <gtest/gtest.h>

#include <string>

#include "errors.hpp"
#include "resp.hpp"
#include "resp_scanner.hpp"

namespace {

using rsh::ProtocolError;
using rsh::ReaderLimits;
using rsh::ReplyReader;
using rsh::ReplyScanner;
using std::string;

// Feeds wire one byte at a time; returns the index of the byte that threw (and
// its message), or npos when every byte was accepted.
std::pair<std::size_t, string> first_failing_byte(const string& wire, ReaderLimits limits = {}) {
    ReplyScanner scanner(limits);
    for (std::size_t i = 0; i < wire.size(); ++i) {
        try {
            scanner.scan(wire.data() + i, 1);
        } catch (const ProtocolError& e) {
            return {i, e.what()};
        }
    }
    return {string::npos, ""};
}

TEST(ReplyScanner, HugeBulkFailsAtItsHeader) {
    const string header = "$999999999999\r\n";
    const auto [at, why] = first_failing_byte(header + string(100, 'x'));
    EXPECT_EQ(at, header.size() - 1) << why;  // the header's LF: no body byte is needed
    EXPECT_EQ(why, "protocol error: reply larger than 536870912 bytes (a bulk string of 999999999999 bytes)");
}

TEST(ReplyScanner, DefaultLimitIsRedisProtoMaxBulkLen) {
    // A 512 MiB value (what proto-max-bulk-len lets Redis store) passes its header;
    // one byte more fails at the header's LF.
    EXPECT_EQ(first_failing_byte("$536870912\r\n").first, string::npos);
    const string header = "$536870913\r\n";
    const auto [at, why] = first_failing_byte(header + "x");
    EXPECT_EQ(at, header.size() - 1) << why;
    EXPECT_EQ(why, "protocol error: reply larger than 536870912 bytes (a bulk string of 536870913 bytes)");
}

TEST(ReplyScanner, FramingIsNotCounted) {
    // A bulk of exactly the limit, inside an array, fits: type bytes, headers and
    // CRLFs are framing; one data byte more fails at its header.
    ReaderLimits limits;
    limits.max_reply_bytes = 1024;
    EXPECT_EQ(first_failing_byte("$1024\r\n" + string(1024, 'v') + "\r\n", limits).first, string::npos);
    EXPECT_EQ(first_failing_byte("*1\r\n$1024\r\n" + string(1024, 'v') + "\r\n", limits).first, string::npos);
    const string header = "$1025\r\n";
    const auto [at, why] = first_failing_byte(header + string(1025, 'v') + "\r\n", limits);
    EXPECT_EQ(at, header.size() - 1) << why;
    EXPECT_EQ(why, "protocol error: reply larger than 1024 bytes (a bulk string of 1025 bytes)");
    // Integers, nils and empty strings carry no data (their count is bounded by
    // max_array_elements): 1000 of them fit a 1024-byte limit.
    string many = "*1000\r\n";
    for (int i = 0; i < 1000; ++i) many += i % 3 == 0 ? ":123456\r\n" : i % 3 == 1 ? "$-1\r\n" : "$0\r\n\r\n";
    EXPECT_EQ(first_failing_byte(many, limits).first, string::npos);
}

TEST(ReplyScanner, HugeArrayFailsAtItsHeader) {
    const string header = "*999999999\r\n";
    const auto [at, why] = first_failing_byte(header + ":1\r\n");
    EXPECT_EQ(at, header.size() - 1) << why;
    EXPECT_EQ(why, "protocol error: more than 1048576 elements in one reply (an array of 999999999)");
}

TEST(ReplyScanner, ElementsOfAllArraysInOneReplyCount) {
    ReaderLimits limits;
    limits.max_array_elements = 5;
    EXPECT_EQ(first_failing_byte("*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n:4\r\n", limits).first, string::npos);
    const string wire = "*2\r\n*4\r\n";
    EXPECT_EQ(first_failing_byte(wire, limits).first, wire.size() - 1);
    // The count starts over with each reply.
    EXPECT_EQ(first_failing_byte("*5\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n*5\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n", limits).first,
              string::npos);
}

TEST(ReplyScanner, NestingDepthIsOurs) {
    string eight, nine;
    for (int i = 0; i < 8; ++i) eight += "*1\r\n";
    nine = eight + "*1\r\n";
    EXPECT_EQ(first_failing_byte(eight + ":1\r\n").first, string::npos);
    const auto [at, why] = first_failing_byte(nine + ":1\r\n");
    EXPECT_EQ(at, nine.size() - 1);
    EXPECT_EQ(why, "protocol error: arrays nested beyond depth 8");
    ReaderLimits shallow;
    shallow.max_depth = 2;
    EXPECT_EQ(first_failing_byte("*1\r\n*1\r\n*1\r\n", shallow).first, 11u);
    // Depth is about nesting, not about how many arrays a reply holds.
    EXPECT_EQ(first_failing_byte("*3\r\n*1\r\n:1\r\n*1\r\n:1\r\n*1\r\n:1\r\n", shallow).first, string::npos);
}

TEST(ReplyScanner, LongStatusLineFailsWhenItCrossesTheLimit) {
    ReaderLimits limits;
    limits.max_reply_bytes = 1024;
    const auto [at, why] = first_failing_byte("-" + string(5000, 'e'), limits);
    EXPECT_EQ(at, 1025u);  // the 1025th byte of text (after the type byte), long before any CRLF
    EXPECT_EQ(why, "protocol error: reply larger than 1024 bytes");
    EXPECT_EQ(first_failing_byte("+" + string(1024, 's') + "\r\n", limits).first, string::npos);
}

TEST(ReplyScanner, BulkBudgetIncludesWhatTheReplyAlreadyUsed) {
    ReaderLimits limits;
    limits.max_reply_bytes = 1024;
    // 1000 data bytes, then 24 more: exactly 1024 fits; 25 more do not.
    const string first = "*2\r\n$1000\r\n" + string(1000, 'a') + "\r\n";
    EXPECT_EQ(first_failing_byte(first + "$24\r\n" + string(24, 'b') + "\r\n", limits).first, string::npos);
    const string second_header = "$25\r\n";
    EXPECT_EQ(first_failing_byte(first + second_header, limits).first, first.size() + second_header.size() - 1);
}

TEST(ReplyScanner, StrictNumbers) {
    for (const char* bad : {"$01\r\n", "$+1\r\n", "$ 1\r\n", "$1 \r\n", "$\r\n", "$-0\r\n", "$1\rx\n",
                            "*01\r\n", "*\r\n", ":\r\n", ":-\r\n", ":1.5\r\n", ":9223372036854775808\r\n",
                            ":123456789012345678901\r\n"}) {
        EXPECT_NE(first_failing_byte(bad).first, string::npos) << bad;
    }
    for (const char* good : {":0\r\n", ":-1\r\n", ":-9223372036854775808\r\n", ":9223372036854775807\r\n",
                             "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n"}) {
        EXPECT_EQ(first_failing_byte(good).first, string::npos) << good;
    }
    EXPECT_EQ(first_failing_byte("$-2\r\n").second, "protocol error: Bulk string length out of range");
    EXPECT_EQ(first_failing_byte("*-2\r\n").second, "protocol error: Multi-bulk length out of range");
}

TEST(ReplyScanner, BulkMustEndInCrlf) {
    EXPECT_EQ(first_failing_byte("$3\r\nabcXY").second, "protocol error: bulk string not followed by CRLF");
    EXPECT_EQ(first_failing_byte("$3\r\nabc\rY").second, "protocol error: bulk string not followed by CRLF");
    // CR and LF inside the data are data.
    EXPECT_EQ(first_failing_byte("$4\r\n\r\n\r\n\r\n").first, string::npos);
}

TEST(ReplyScanner, OnlyResp2TypeBytes) {
    // RESP3 types (hiredis 1.x would parse some of them): never from a HELLO 2 server.
    for (const char* resp3 : {"_\r\n", "#t\r\n", ",1.5\r\n", "%1\r\n", "~1\r\n", "=5\r\ntxt:x\r\n", "(1\r\n", ">1\r\n"}) {
        const auto [at, why] = first_failing_byte(resp3);
        EXPECT_EQ(at, 0u) << resp3;
        EXPECT_EQ(why.rfind("protocol error: invalid reply type byte 0x", 0), 0u) << why;
        EXPECT_NE(why.find(" reply type)"), string::npos) << why;  // named, e.g. "(RESP3 double reply type)"
    }
}

TEST(ReplyScanner, CrOrLfInsideAStatusLineIsRefused) {
    // Redis never sends them; hiredis 1.x refuses them, 0.14 did not: ours always does.
    for (const char* bad : {"+a\rb\r\n", "-ERR x\ny\r\n", "+OK\r\r\n", "+\n"}) {
        const auto [at, why] = first_failing_byte(bad);
        EXPECT_NE(at, string::npos) << bad;
        EXPECT_EQ(why, "protocol error: Bad simple string value") << bad;
    }
    EXPECT_EQ(first_failing_byte("+OK\r\n-ERR fine\r\n").first, string::npos);
}

TEST(ReplyReaderLimits, RefusedBytesNeverReachTheBuffer) {
    // The reader fails on the header; later bytes are refused, not buffered.
    ReplyReader reader;
    EXPECT_THROW(reader.feed("$999999999999\r\n", 15), ProtocolError);
    const string chunk(65536, 'x');
    EXPECT_THROW(reader.feed(chunk.data(), chunk.size()), ProtocolError);
    EXPECT_FALSE(reader.has_pending_bytes());
}

}  // namespace
