// CommandBuffer: exact RESP request bytes; format_number: Redis arguments from doubles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "commands.hpp"

namespace {

using rsh::CommandBuffer;
using rsh::format_number;
using std::string;

TEST(CommandBuffer, EmptyHasNothing) {
    CommandBuffer b;
    EXPECT_EQ(b.count(), 0u);
    EXPECT_EQ(b.bytes(), "");
}

TEST(CommandBuffer, EncodesOneCommandAsRespArray) {
    CommandBuffer b;
    b.add({"SET", "session:abc", "value", "EX", "3600"});
    EXPECT_EQ(b.count(), 1u);
    EXPECT_EQ(b.bytes(),
              "*5\r\n$3\r\nSET\r\n$11\r\nsession:abc\r\n$5\r\nvalue\r\n$2\r\nEX\r\n$4\r\n3600\r\n");
}

TEST(CommandBuffer, SingleWordCommand) {
    CommandBuffer b;
    b.add({"MULTI"});
    EXPECT_EQ(b.bytes(), "*1\r\n$5\r\nMULTI\r\n");
}

TEST(CommandBuffer, AppendsCommandsAndCountsThem) {
    CommandBuffer b;
    b.add({"MULTI"});
    b.add({"SET", "k", "v"});
    b.add({"EXEC"});
    EXPECT_EQ(b.count(), 3u);
    EXPECT_EQ(b.bytes(), "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nEXEC\r\n");
}

TEST(CommandBuffer, EmptyArgument) {
    CommandBuffer b;
    b.add({"SET", "k", ""});
    EXPECT_EQ(b.bytes(), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

TEST(CommandBuffer, BinarySafeArguments) {
    const string nul("a\0b", 3);
    const string crlf = "\r\n$1\r\n*";
    CommandBuffer b;
    b.add({"SET", nul, crlf});
    const string expected = string("*3\r\n$3\r\nSET\r\n$3\r\na\0b\r\n", 22) + "$7\r\n\r\n$1\r\n*\r\n";
    EXPECT_EQ(b.bytes(), expected);
}

TEST(CommandBuffer, AllByteValuesAndLargeArgument) {
    string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    string big(1 << 20, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    CommandBuffer b;
    b.add({"SET", all, big});
    const string expected = "*3\r\n$3\r\nSET\r\n$256\r\n" + all + "\r\n$1048576\r\n" + big + "\r\n";
    EXPECT_EQ(b.bytes(), expected);
}

TEST(CommandBuffer, TakeEmptiesTheBuffer) {
    CommandBuffer b;
    b.add({"GET", "k"});
    b.add({"GET", "l"});
    const string taken = b.take();
    EXPECT_EQ(taken, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nl\r\n");
    EXPECT_EQ(b.count(), 0u);
    b.add({"PING"});
    EXPECT_EQ(b.count(), 1u);
    EXPECT_EQ(b.bytes(), "*1\r\n$4\r\nPING\r\n");
}

TEST(FormatNumber, Integers) {
    EXPECT_EQ(format_number(0), "0");
    EXPECT_EQ(format_number(1), "1");
    EXPECT_EQ(format_number(3600), "3600");
    EXPECT_EQ(format_number(1700000000), "1700000000");
    EXPECT_EQ(format_number(1795665137), "1795665137");
}

TEST(FormatNumber, Negatives) {
    EXPECT_EQ(format_number(-1), "-1");
    EXPECT_EQ(format_number(-1700000000), "-1700000000");
    EXPECT_EQ(format_number(-0.0), "0");
    EXPECT_EQ(format_number(-2.5), "-2.5");
}

TEST(FormatNumber, Fractions) {
    EXPECT_EQ(format_number(1.5), "1.5");
    EXPECT_EQ(format_number(0.25), "0.25");
    EXPECT_EQ(format_number(1700000000.25), "1700000000.25");
    // Full precision: the text reads back as the same double.
    for (double v : {0.1, 1.0 / 3.0, 1700000000.123456, -7.0e-9, 123456789.987654321}) {
        const string text = format_number(v);
        EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
        EXPECT_EQ(text.find('.') != string::npos || text.find('e') != string::npos, true) << text;
    }
}

TEST(FormatNumber, LargeValues) {
    EXPECT_EQ(format_number(9007199254740991.0), "9007199254740991");  // 2^53 - 1
    EXPECT_EQ(format_number(9007199254740992.0), "9007199254740992");  // 2^53
    EXPECT_EQ(format_number(-9007199254740991.0), "-9007199254740991");
    for (double v : {1e20, -1e20, 1.8446744073709552e19, 1e300}) {
        const string text = format_number(v);
        EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
    }
    EXPECT_EQ(format_number(1e20), "1e+20");
}

TEST(FormatNumber, Infinity) {
    // Redis accepts "inf"/"-inf" as scores.
    EXPECT_EQ(format_number(HUGE_VAL), "inf");
    EXPECT_EQ(format_number(-HUGE_VAL), "-inf");
}

TEST(CommandBuffer, MarkedArgumentOffsetFollowsAppend) {
    const string value(200, 'v');
    CommandBuffer round;
    round.add({"MULTI"});
    EXPECT_EQ(round.marked_offset(), CommandBuffer::kNone);
    round.mark(value);
    EXPECT_EQ(round.marked_offset(), CommandBuffer::kNone);  // not encoded yet
    round.add({"SET", "key", value, "EX", "60"});
    const std::size_t at = round.marked_offset();
    ASSERT_NE(at, CommandBuffer::kNone);
    EXPECT_EQ(round.bytes().substr(at, value.size()), value);
    EXPECT_EQ(round.bytes().substr(at - 6, 6), "$200\r\n");
    const string copy(value);  // equal bytes elsewhere are not the marked argument
    CommandBuffer other;
    other.mark(value);
    other.add({"SET", "key", copy});
    EXPECT_EQ(other.marked_offset(), CommandBuffer::kNone);

    CommandBuffer prefixed;  // a handshake in front keeps the value's place
    prefixed.add({"SELECT", "3"});
    const std::size_t handshake = prefixed.bytes().size();
    prefixed.append(round);
    EXPECT_EQ(prefixed.marked_offset(), handshake + at);
    EXPECT_EQ(prefixed.bytes().substr(prefixed.marked_offset(), value.size()), value);
    prefixed.clear();
    EXPECT_EQ(prefixed.marked_offset(), CommandBuffer::kNone);
}

}  // namespace
