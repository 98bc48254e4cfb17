// The sentinel query without I/O (exact request bytes, replies fed in
// fragments), replica health filtering, and ROLE checked in a handshake.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "config.hpp"
#include "errors.hpp"
#include "operation.hpp"
#include "sentinel.hpp"

namespace {

using rsh::SentinelAnswer;
using rsh::SentinelQuery;
using std::string;

string cmd(std::initializer_list<string> args) {
    string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return out;
}

string bulk(const string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

string array(std::initializer_list<string> items) {
    string out = "*" + std::to_string(items.size()) + "\r\n";
    for (const auto& item : items) out += item;
    return out;
}

string replica(const string& ip, const string& port, const string& flags, const string& link) {
    return array({bulk("name"), bulk(ip + ":" + port), bulk("ip"), bulk(ip), bulk("port"), bulk(port),
                  bulk("flags"), bulk(flags), bulk("master-link-status"), bulk(link)});
}

// Feeds the reply one byte at a time: only the last byte completes it.
const SentinelAnswer& feed_bytewise(SentinelQuery& query, const string& reply) {
    for (std::size_t i = 0; i < reply.size(); ++i) {
        const bool done = query.feed(reply.data() + i, 1);
        EXPECT_EQ(done, i + 1 == reply.size()) << "at byte " << i;
    }
    return query.answer();
}

TEST(SentinelQuery, AsksForTheMasterAddress) {
    SentinelQuery query(SentinelQuery::Ask::Master, "mymaster", std::nullopt, std::nullopt, true);
    EXPECT_EQ(query.request(), cmd({"SENTINEL", "get-master-addr-by-name", "mymaster"}));
    const SentinelAnswer& answer = feed_bytewise(query, array({bulk("127.0.0.1"), bulk("6380")}));
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Address);
    EXPECT_EQ(answer.address.host, "127.0.0.1");
    EXPECT_EQ(answer.address.port, 6380);
}

TEST(SentinelQuery, AuthenticatesOnlyWhenAsked) {
    SentinelQuery fresh(SentinelQuery::Ask::Master, "m", string("sentry"), string("s3cret"), true);
    EXPECT_EQ(fresh.request(), cmd({"AUTH", "sentry", "s3cret"}) + cmd({"SENTINEL", "get-master-addr-by-name", "m"}));
    SentinelQuery no_user(SentinelQuery::Ask::Master, "m", std::nullopt, string("s3cret"), true);
    EXPECT_EQ(no_user.request(), cmd({"AUTH", "s3cret"}) + cmd({"SENTINEL", "get-master-addr-by-name", "m"}));
    SentinelQuery pooled(SentinelQuery::Ask::Master, "m", string("sentry"), string("s3cret"), false);
    EXPECT_EQ(pooled.request(), cmd({"SENTINEL", "get-master-addr-by-name", "m"}));
}

TEST(SentinelQuery, UnknownMasterNameIsNull) {
    SentinelQuery query(SentinelQuery::Ask::Master, "nope", std::nullopt, std::nullopt, false);
    EXPECT_EQ(feed_bytewise(query, "*-1\r\n").kind, SentinelAnswer::Kind::UnknownMaster);
    SentinelQuery resp3_null(SentinelQuery::Ask::Master, "nope", std::nullopt, std::nullopt, false);
    EXPECT_EQ(feed_bytewise(resp3_null, "$-1\r\n").kind, SentinelAnswer::Kind::UnknownMaster);
}

TEST(SentinelQuery, RefusedAuthIsTheAnswer) {
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, string("wrong"), true);
    const SentinelAnswer& answer = feed_bytewise(
        query, "-WRONGPASS invalid username-password pair or user is disabled.\r\n" +
                   array({bulk("127.0.0.1"), bulk("6380")}));
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Error);
    EXPECT_EQ(answer.error, "WRONGPASS invalid username-password pair or user is disabled.");
}

TEST(SentinelQuery, MalformedAddressIsAnError) {
    for (const string& reply : {array({bulk("127.0.0.1"), bulk("0")}), array({bulk("127.0.0.1")}),
                                array({bulk(""), bulk("6379")}), string(":1\r\n")}) {
        SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
        ASSERT_TRUE(query.feed(reply.data(), reply.size()));
        EXPECT_EQ(query.answer().kind, SentinelAnswer::Kind::Error) << reply;
        EXPECT_EQ(query.answer().error, "unexpected reply to SENTINEL get-master-addr-by-name");
    }
}

TEST(SentinelQuery, ExtraBytesAreAProtocolError) {
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
    const string reply = "*-1\r\n+OK\r\n";
    EXPECT_THROW(query.feed(reply.data(), reply.size()), rsh::ProtocolError);
}

TEST(SentinelQuery, KeepsOnlyHealthyReplicas) {
    SentinelQuery query(SentinelQuery::Ask::Replicas, "m", std::nullopt, std::nullopt, false);
    EXPECT_EQ(query.request(), cmd({"SENTINEL", "replicas", "m"}));
    const string reply = array({
        replica("10.0.0.1", "6380", "slave", "ok"),
        replica("10.0.0.2", "6381", "s_down,slave", "ok"),
        replica("10.0.0.3", "6382", "slave,disconnected", "ok"),
        replica("10.0.0.4", "6383", "slave", "err"),
        replica("10.0.0.5", "6384", "o_down,slave", "ok"),
        replica("10.0.0.6", "6385", "slave", "ok"),
    });
    const SentinelAnswer& answer = feed_bytewise(query, reply);
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Replicas);
    ASSERT_EQ(answer.replicas.size(), 2u);
    EXPECT_EQ(answer.replicas[0].host, "10.0.0.1");
    EXPECT_EQ(answer.replicas[0].port, 6380);
    EXPECT_EQ(answer.replicas[1].host, "10.0.0.6");
    EXPECT_EQ(answer.replicas[1].port, 6385);
}

TEST(SentinelQuery, NoReplicasIsAnEmptyList) {
    SentinelQuery query(SentinelQuery::Ask::Replicas, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& answer = feed_bytewise(query, "*0\r\n");
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Replicas);
    EXPECT_TRUE(answer.replicas.empty());
}

TEST(SentinelPool, NamesNeverMatchDataPoolsNorEachOther) {
    const string plain = rsh::sentinel_pool_name("127.0.0.1", 26379, std::nullopt, std::nullopt, std::nullopt);
    const string authed = rsh::sentinel_pool_name("127.0.0.1", 26379, string("u"), string("p"), std::nullopt);
    const string other_pass = rsh::sentinel_pool_name("127.0.0.1", 26379, string("u"), string("q"), std::nullopt);
    const string custom = rsh::sentinel_pool_name("127.0.0.1", 26379, std::nullopt, std::nullopt, string("mine"));
    rsh::Config data;
    data.port = 26379;
    EXPECT_NE(plain, data.pool_name());
    EXPECT_EQ(plain.rfind("sentinel|", 0), 0u);
    EXPECT_NE(plain, authed);
    EXPECT_NE(authed, other_pass);
    EXPECT_NE(custom, plain);
    EXPECT_NE(custom.find("mine"), string::npos);
    EXPECT_EQ(authed.find("p:"), string::npos) << "the password itself is never in a pool name";
}

// ROLE goes with the handshake of a new connection and refuses another role.
TEST(HandshakeRole, MasterExpectedSlaveRefused) {
    rsh::HandshakeArgs args;
    args.password = "pw";
    args.database = 2;
    args.role = "master";
    auto op = rsh::Operation::handshake(args);
    ASSERT_TRUE(op);
    EXPECT_EQ(*op->next_request(0), cmd({"AUTH", "pw"}) + cmd({"SELECT", "2"}) + cmd({"ROLE"}) + cmd({"HELLO", "2"}));
    const string replies = "+OK\r\n+OK\r\n" + array({bulk("slave"), bulk("127.0.0.1"), ":6379\r\n",
                                                      bulk("connected"), ":10\r\n"}) + "*0\r\n";
    ASSERT_TRUE(op->feed(replies.data(), replies.size()));
    ASSERT_EQ(op->result().kind, rsh::Result::Kind::Error);
    EXPECT_EQ(op->result().text, "role mismatch: expected master, got slave");
}

TEST(HandshakeRole, MasterAcceptedAndPrefixedBeforeTheCommand) {
    rsh::KeyNaming naming;
    rsh::GetArgs get{"session", "k"};
    rsh::Operation op = rsh::Operation::get(naming, get);
    op.next_request(rsh::kRedis7);
    rsh::HandshakeArgs args;
    args.role = "master";
    args.hello = false;
    EXPECT_EQ(op.prefix_handshake(args), cmd({"ROLE"}) + cmd({"GET", "session:k"}));
    const string replies = array({bulk("master"), ":0\r\n", "*0\r\n"}) + bulk("v");
    ASSERT_TRUE(op.feed(replies.data(), replies.size()));
    EXPECT_FALSE(op.handshake_failed());
    ASSERT_EQ(op.result().kind, rsh::Result::Kind::String);
    EXPECT_EQ(op.result().text, "v");
}

TEST(HandshakeRole, PrefixedRefusalFailsTheHandshake) {
    rsh::KeyNaming naming;
    rsh::Operation op = rsh::Operation::get(naming, rsh::GetArgs{"session", "k"});
    op.next_request(rsh::kRedis7);
    rsh::HandshakeArgs args;
    args.role = "master";
    args.hello = false;
    op.prefix_handshake(args);
    const string replies = array({bulk("slave"), bulk("127.0.0.1"), ":6379\r\n", bulk("connected"), ":1\r\n"}) +
                           bulk("stale");
    ASSERT_TRUE(op.feed(replies.data(), replies.size()));
    EXPECT_TRUE(op.handshake_failed());
    EXPECT_EQ(op.result().text, "role mismatch: expected master, got slave");
}

}  // namespace
