// Key slots against the answers of a real Redis 7.0 cluster (CLUSTER KEYSLOT),
// hash tags included; spec/cluster/layout_spec.lua asks a live cluster too.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "slots.hpp"

namespace {

// Recorded with redis-cli CLUSTER KEYSLOT on redis-server 7.0.15.
const std::vector<std::pair<std::string, int>> kRedisAnswers = {
    {"123456789", 12739},
    {"foo", 12182},
    {"{user1000}.following", 3443},
    {"a{}b", 13694},                 // empty tag: the whole key
    {"{}", 15257},
    {"a{b}c{d}", 3300},              // first tag only: "b"
    {"sessions:session:abc", 8350},
    {"sessions:session:web:alice", 11094},
    {"...:a}b{c", 12561},            // '}' before '{': no tag
    {"x{{y}}", 15133},               // tag "{y"
    {"{", 4092},
    {"}", 12090},
    {"", 0},
    {"{a", 10276},                   // unclosed: the whole key
    {"a}{b}", 3300},                 // tag "b"
    {"{sessions}:session:abc", 12738},
};

TEST(Slots, MatchRedisClusterKeyslot) {
    for (const auto& [key, slot] : kRedisAnswers) EXPECT_EQ(rsh::key_slot(key), slot) << key;
}

TEST(Slots, Crc16XmodemCheckValue) {
    EXPECT_EQ(rsh::crc16_xmodem("123456789"), 0x31C3);  // the CRC catalogue's check value
}

TEST(Slots, HashTagIsBetweenFirstOpenAndFirstCloseAfterIt) {
    EXPECT_EQ(rsh::hash_tag("a{b}c{d}"), "b");
    EXPECT_EQ(rsh::hash_tag("x{{y}}"), "{y");
    EXPECT_EQ(rsh::hash_tag("a{}b{c}"), "a{}b{c}");  // the first tag is empty: no tag at all
    EXPECT_EQ(rsh::hash_tag("...:a}b{c"), "...:a}b{c");
    EXPECT_EQ(rsh::hash_tag("{sessions}:session:abc"), "sessions");
    EXPECT_EQ(rsh::key_slot("{sessions}:x"), rsh::key_slot("{sessions}:y"));
}

TEST(Slots, BinaryKeys) {
    const std::string key("a\0b", 3);
    EXPECT_EQ(rsh::key_slot(key), rsh::crc16_xmodem(key) & 16383);
}

}  // namespace
