// The subscription to a sentinel's events without I/O: the request bytes, the
// confirmation, events and PING answers fed in fragments, refusals.
#include <gtest/gtest.h>

#include "resp_text.hpp"

#include <initializer_list>
#include <string>

#include "errors.hpp"
#include "sentinel_watch.hpp"

namespace {

using rsh::SentinelWatch;
using std::string;
using rsh_test::cmd;

const string kConfirmed = "*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n";

string pmessage(const string& channel, const string& payload) {
    return cmd({"pmessage", "*", channel, payload});
}

// Feeds `bytes` one byte at a time, summing the progress.
SentinelWatch::Progress feed_bytewise(SentinelWatch& watch, const string& bytes) {
    SentinelWatch::Progress total;
    for (const char c : bytes) {
        const SentinelWatch::Progress p = watch.feed(&c, 1);
        total.events += p.events;
        total.pongs += p.pongs;
    }
    return total;
}

TEST(SentinelWatch, SubscribesToEveryChannelWithoutAuthWhenNoPassword) {
    SentinelWatch watch;
    EXPECT_EQ(cmd({"PSUBSCRIBE", "*"}), string(watch.subscribe(std::nullopt, std::nullopt)));
    EXPECT_EQ(cmd({"PSUBSCRIBE", "*"}), string(watch.subscribe(string("user"), std::nullopt)));
}

TEST(SentinelWatch, AuthenticatesFirstWithTheSentinelsCredentials) {
    SentinelWatch watch;
    EXPECT_EQ(cmd({"AUTH", "pw"}) + cmd({"PSUBSCRIBE", "*"}), string(watch.subscribe(std::nullopt, string("pw"))));
    EXPECT_EQ(cmd({"AUTH", "u", "pw"}) + cmd({"PSUBSCRIBE", "*"}), string(watch.subscribe(string("u"), string("pw"))));
}

TEST(SentinelWatch, SubscribedOnlyOnceConfirmed) {
    SentinelWatch watch;
    watch.subscribe(std::nullopt, string("pw"));
    EXPECT_FALSE(watch.subscribed());
    auto p = watch.feed("+OK\r\n", 5);
    EXPECT_FALSE(watch.subscribed());
    EXPECT_EQ(0u, p.events);
    p = feed_bytewise(watch, kConfirmed);
    EXPECT_TRUE(watch.subscribed());
    EXPECT_EQ(0u, p.events);
}

TEST(SentinelWatch, CountsEventsAndPongsInFragments) {
    SentinelWatch watch;
    watch.subscribe(std::nullopt, std::nullopt);
    const string bytes = kConfirmed + pmessage("+try-failover", "master mymaster 127.0.0.1 6379") +
                         cmd({"pong", ""}) + pmessage("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380") +
                         pmessage("+new-epoch", "7");
    const auto p = feed_bytewise(watch, bytes);
    EXPECT_TRUE(watch.subscribed());
    EXPECT_EQ(3u, p.events);
    EXPECT_EQ(1u, p.pongs);
    // all at once, on a new subscription
    watch.subscribe(std::nullopt, std::nullopt);
    const auto q = watch.feed(bytes.data(), bytes.size());
    EXPECT_EQ(3u, q.events);
    EXPECT_EQ(1u, q.pongs);
}

TEST(SentinelWatch, AnythingElseAfterTheConfirmationCountsAsAnEvent) {
    SentinelWatch watch;
    watch.subscribe(std::nullopt, std::nullopt);
    const string bytes = kConfirmed + ":5\r\n" + cmd({"message", "x", "y"});
    EXPECT_EQ(2u, watch.feed(bytes.data(), bytes.size()).events);
}

TEST(SentinelWatch, RefusedAuthOrSubscriptionIsAnError) {
    SentinelWatch watch;
    watch.subscribe(std::nullopt, string("wrong"));
    const string refused = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    try {
        watch.feed(refused.data(), refused.size());
        FAIL() << "no error";
    } catch (const rsh::WatchRefused& e) {
        EXPECT_EQ("WRONGPASS invalid username-password pair or user is disabled.", string(e.what()));
    }
    watch.subscribe(std::nullopt, std::nullopt);
    const string noperm = "-NOPERM No permissions to access a channel\r\n";
    EXPECT_THROW(watch.feed(noperm.data(), noperm.size()), rsh::WatchRefused);
}

TEST(SentinelWatch, AnUnconfirmedSubscriptionIsAProtocolError) {
    SentinelWatch watch;
    EXPECT_THROW(watch.feed("+OK\r\n", 5), rsh::ProtocolError);  // nothing was asked
    watch.subscribe(std::nullopt, std::nullopt);
    const string other = pmessage("+sdown", "x");
    EXPECT_THROW(watch.feed(other.data(), other.size()), rsh::ProtocolError);
    watch.subscribe(std::nullopt, std::nullopt);
    EXPECT_THROW(watch.feed("!!\r\n", 4), rsh::ProtocolError);
}

TEST(SentinelWatch, PingIsAnArrayCommand) {
    EXPECT_EQ(cmd({"PING"}), string(SentinelWatch::ping()));
}

}  // namespace
