// The sentinel queries without I/O (exact request bytes, replies fed in
// fragments), replica health filtering, the promoted replica, which answer a
// round follows (config-epoch, failovers in progress), the retry budget, and
// ROLE checked in a handshake.
#include <gtest/gtest.h>

#include "resp_text.hpp"

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "config.hpp"
#include "errors.hpp"
#include "operation.hpp"
#include "sentinel.hpp"

namespace {

using rsh::SentinelAnswer;
using rsh::SentinelQuery;
using std::string;
using rsh_test::cmd;
using rsh_test::bulk;

string array(std::initializer_list<string> items) {
    string out = "*" + std::to_string(items.size()) + "\r\n";
    for (const auto& item : items) out += item;
    return out;
}

string replica(const string& ip, const string& port, const string& flags, const string& link) {
    return array({bulk("name"), bulk(ip + ":" + port), bulk("ip"), bulk(ip), bulk("port"), bulk(port),
                  bulk("flags"), bulk(flags), bulk("master-link-status"), bulk(link)});
}

// SENTINEL MASTER's answer as Redis 7.0 gives it (trimmed to the fields read and a few others).
string master_reply(const string& ip, const string& port, const string& flags, const string& epoch) {
    return array({bulk("name"), bulk("mymaster"), bulk("ip"), bulk(ip), bulk("port"), bulk(port),
                  bulk("runid"), bulk("cb4786117a683771c459a89fe2490a99fef19c11"), bulk("flags"), bulk(flags),
                  bulk("role-reported"), bulk("master"), bulk("config-epoch"), bulk(epoch), bulk("quorum"),
                  bulk("2")});
}

// Feeds the reply one byte at a time: only the last byte completes it.
const SentinelAnswer& feed_bytewise(SentinelQuery& query, const string& reply) {
    for (std::size_t i = 0; i < reply.size(); ++i) {
        const bool done = query.feed(reply.data() + i, 1);
        EXPECT_EQ(done, i + 1 == reply.size()) << "at byte " << i;
    }
    return query.answer();
}

SentinelAnswer master_answer(const string& ip, int port, long long epoch, bool in_failover = false) {
    SentinelAnswer a;
    a.kind = SentinelAnswer::Kind::Master;
    a.address = {ip, port};
    a.config_epoch = epoch;
    a.failover_in_progress = in_failover;
    return a;
}

TEST(SentinelQuery, AsksForTheMasterWithItsEpoch) {
    SentinelQuery query(SentinelQuery::Ask::Master, "mymaster", std::nullopt, std::nullopt, true);
    EXPECT_EQ(query.request(), cmd({"SENTINEL", "MASTER", "mymaster"}));
    const SentinelAnswer& answer = feed_bytewise(query, master_reply("127.0.0.1", "6380", "master", "7"));
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Master);
    EXPECT_EQ(answer.address.host, "127.0.0.1");
    EXPECT_EQ(answer.address.port, 6380);
    EXPECT_EQ(answer.config_epoch, 7);
    EXPECT_FALSE(answer.failover_in_progress);
}

TEST(SentinelQuery, ReadsAFailoverInProgress) {
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& answer =
        feed_bytewise(query, master_reply("127.0.0.1", "6380", "master,failover_in_progress,force_failover", "0"));
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Master);
    EXPECT_TRUE(answer.failover_in_progress);
}

TEST(SentinelQuery, AuthenticatesOnlyWhenAsked) {
    SentinelQuery fresh(SentinelQuery::Ask::Master, "m", string("sentry"), string("s3cret"), true);
    EXPECT_EQ(fresh.request(), cmd({"AUTH", "sentry", "s3cret"}) + cmd({"SENTINEL", "MASTER", "m"}));
    SentinelQuery no_user(SentinelQuery::Ask::Master, "m", std::nullopt, string("s3cret"), true);
    EXPECT_EQ(no_user.request(), cmd({"AUTH", "s3cret"}) + cmd({"SENTINEL", "MASTER", "m"}));
    SentinelQuery pooled(SentinelQuery::Ask::Master, "m", string("sentry"), string("s3cret"), false);
    EXPECT_EQ(pooled.request(), cmd({"SENTINEL", "MASTER", "m"}));
}

TEST(SentinelQuery, UnknownMasterName) {
    SentinelQuery query(SentinelQuery::Ask::Master, "nope", std::nullopt, std::nullopt, false);
    EXPECT_EQ(feed_bytewise(query, "-ERR No such master with that name\r\n").kind,
              SentinelAnswer::Kind::UnknownMaster);
    SentinelQuery null_reply(SentinelQuery::Ask::Master, "nope", std::nullopt, std::nullopt, false);
    EXPECT_EQ(feed_bytewise(null_reply, "*-1\r\n").kind, SentinelAnswer::Kind::UnknownMaster);
    SentinelQuery other_error(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& answer = feed_bytewise(other_error, "-NOAUTH Authentication required.\r\n");
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Error);
    EXPECT_EQ(answer.error, "NOAUTH Authentication required.");
}

TEST(SentinelQuery, RefusedAuthIsTheAnswer) {
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, string("wrong"), true);
    const SentinelAnswer& answer = feed_bytewise(
        query, "-WRONGPASS invalid username-password pair or user is disabled.\r\n" +
                   master_reply("127.0.0.1", "6380", "master", "1"));
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Error);
    EXPECT_EQ(answer.error, "WRONGPASS invalid username-password pair or user is disabled.");
}

TEST(SentinelQuery, MalformedMasterIsAnError) {
    for (const string& reply : {master_reply("127.0.0.1", "0", "master", "1"),
                                master_reply("", "6379", "master", "1"),
                                master_reply("127.0.0.1", "6379", "master", "-1"),
                                master_reply("127.0.0.1", "6379", "master", "x"),
                                array({bulk("ip"), bulk("127.0.0.1")}), array({bulk("ip")}), string(":1\r\n")}) {
        SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
        ASSERT_TRUE(query.feed(reply.data(), reply.size()));
        EXPECT_EQ(query.answer().kind, SentinelAnswer::Kind::Error) << reply;
        EXPECT_EQ(query.answer().error, "unexpected reply to SENTINEL MASTER");
    }
}

TEST(SentinelQuery, ExtraBytesAreAProtocolError) {
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
    const string reply = "*-1\r\n+OK\r\n";
    EXPECT_THROW(query.feed(reply.data(), reply.size()), rsh::ProtocolError);
}

// A pooled lookup (no AUTH) reads SENTINEL MASTER's answer in place; after AUTH
// the reader builds it: both must answer every reply alike, whole or in pieces.
TEST(SentinelQuery, ReadsTheMasterInPlaceAsTheReaderDoes) {
    const string dup_ip = array({bulk("ip"), bulk("127.0.0.1"), bulk("port"), bulk("6380"), bulk("ip"), bulk("10.0.0.1"),
                                 bulk("port"), bulk("1")});
    const string long_len = "*2\r\n$2\r\nip\r\n$0010\r\n127.0.0.1\r\n";  // non-canonical length
    for (const string& reply :
         {master_reply("127.0.0.1", "6380", "master", "7"), master_reply("::1", "6380", "master,failover_in_progress", "0"),
          master_reply("127.0.0.1", "0", "master", "1"), master_reply("127.0.0.1", "6379", "master", "-1"), dup_ip,
          array({}), array({bulk("ip"), string(":1\r\n")}), string("*-1\r\n"), string("$-1\r\n"),
          string("-ERR No such master with that name\r\n"), master_reply("127.0.0.1", "6380", "master", "7") + "+OK\r\n",
          long_len, string("*3\r\n$2\r\nip\r\n$1\r\na\r\n$1\r\nb\r\n")}) {
        for (std::size_t piece : {reply.size(), std::size_t{7}, std::size_t{1}}) {
            SentinelQuery fast(SentinelQuery::Ask::Master, "m", std::nullopt, string("pw"), false);
            SentinelQuery read(SentinelQuery::Ask::Master, "m", std::nullopt, string("pw"), true);
            ASSERT_FALSE(read.feed("+OK\r\n", 5));
            auto feed = [&](SentinelQuery& query) -> string {
                try {
                    bool done = false;
                    for (std::size_t at = 0; at < reply.size(); at += piece) {
                        done = query.feed(reply.data() + at, std::min(piece, reply.size() - at));
                    }
                    return done ? "done" : "pending";
                } catch (const rsh::ProtocolError&) {
                    return "throws";
                }
            };
            const string state = feed(fast);
            ASSERT_EQ(state, feed(read)) << reply << " in pieces of " << piece;
            if (state != "done") continue;
            EXPECT_EQ(fast.answer().kind, read.answer().kind) << reply;
            EXPECT_EQ(fast.answer().address, read.answer().address) << reply;
            EXPECT_EQ(fast.answer().config_epoch, read.answer().config_epoch) << reply;
            EXPECT_EQ(fast.answer().failover_in_progress, read.answer().failover_in_progress) << reply;
            EXPECT_EQ(fast.answer().error, read.answer().error) << reply;
        }
    }
    // the first of a field given twice, as the reader's lookup takes it
    SentinelQuery query(SentinelQuery::Ask::Master, "m", std::nullopt, std::nullopt, false);
    ASSERT_TRUE(query.feed(dup_ip.data(), dup_ip.size()));
    ASSERT_EQ(query.answer().kind, SentinelAnswer::Kind::Master);
    EXPECT_EQ(query.answer().address, (rsh::SentinelAddress{"127.0.0.1", 6380}));
}

TEST(SentinelQuery, KeepsOnlyHealthyReplicasWithTheMastersEpoch) {
    SentinelQuery query(SentinelQuery::Ask::Replicas, "m", std::nullopt, std::nullopt, false);
    EXPECT_EQ(query.request(), cmd({"SENTINEL", "MASTER", "m"}) + cmd({"SENTINEL", "REPLICAS", "m"}));
    const string reply = master_reply("10.0.0.9", "6379", "master", "4") + array({
        replica("10.0.0.1", "6380", "slave", "ok"),
        replica("10.0.0.2", "6381", "s_down,slave", "ok"),
        replica("10.0.0.3", "6382", "slave,disconnected", "ok"),
        replica("10.0.0.4", "6383", "slave", "err"),
        replica("10.0.0.5", "6384", "o_down,slave", "ok"),
        replica("10.0.0.6", "6385", "slave", "ok"),
    });
    const SentinelAnswer& answer = feed_bytewise(query, reply);
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Replicas);
    EXPECT_EQ(answer.config_epoch, 4);
    ASSERT_EQ(answer.replicas.size(), 2u);
    EXPECT_EQ(answer.replicas[0].host, "10.0.0.1");
    EXPECT_EQ(answer.replicas[0].port, 6380);
    EXPECT_EQ(answer.replicas[1].host, "10.0.0.6");
    EXPECT_EQ(answer.replicas[1].port, 6385);
}

TEST(SentinelQuery, NoReplicasIsAnEmptyList) {
    SentinelQuery query(SentinelQuery::Ask::Replicas, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& answer = feed_bytewise(query, master_reply("10.0.0.9", "6379", "master", "0") + "*0\r\n");
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Replicas);
    EXPECT_TRUE(answer.replicas.empty());
    SentinelQuery unknown(SentinelQuery::Ask::Replicas, "nope", std::nullopt, std::nullopt, false);
    EXPECT_EQ(feed_bytewise(unknown, "-ERR No such master with that name\r\n-ERR No such master with that name\r\n")
                  .kind,
              SentinelAnswer::Kind::UnknownMaster);
}

TEST(SentinelQuery, AsksTheLeaderForThePromotedReplica) {
    SentinelQuery query(SentinelQuery::Ask::Promoted, "m", std::nullopt, std::nullopt, false);
    EXPECT_EQ(query.request(), cmd({"SENTINEL", "MASTER", "m"}) + cmd({"SENTINEL", "REPLICAS", "m"}));
    const string in_progress = master_reply("10.0.0.9", "6379", "master,failover_in_progress", "0");
    const string replicas = array({replica("10.0.0.1", "6380", "slave", "ok"),
                                   replica("10.0.0.2", "6381", "slave,promoted", "err")});
    const SentinelAnswer& answer = feed_bytewise(query, in_progress + replicas);
    ASSERT_EQ(answer.kind, SentinelAnswer::Kind::Promoted);
    EXPECT_EQ(answer.address.host, "10.0.0.2");
    EXPECT_EQ(answer.address.port, 6381);
    // no replica picked yet: the master, still replicating to them
    SentinelQuery early(SentinelQuery::Ask::Promoted, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& not_yet =
        feed_bytewise(early, in_progress + array({replica("10.0.0.1", "6380", "slave", "ok")}));
    ASSERT_EQ(not_yet.kind, SentinelAnswer::Kind::Master);
    EXPECT_EQ(not_yet.address.host, "10.0.0.9");
    // switched between the round and this query: the new master, whatever the flags of its replicas
    SentinelQuery late(SentinelQuery::Ask::Promoted, "m", std::nullopt, std::nullopt, false);
    const SentinelAnswer& switched = feed_bytewise(late, master_reply("10.0.0.2", "6381", "master", "1") + replicas);
    ASSERT_EQ(switched.kind, SentinelAnswer::Kind::Master);
    EXPECT_EQ(switched.address.host, "10.0.0.2");
    EXPECT_EQ(switched.config_epoch, 1);
}

TEST(SentinelChoice, TheHighestEpochWinsWhateverTheOrder) {
    const SentinelAnswer stale = master_answer("10.0.0.1", 6379, 3);
    const SentinelAnswer fresh = master_answer("10.0.0.2", 6379, 4);
    for (const auto& answers : {std::vector<const SentinelAnswer*>{&stale, &fresh},
                                std::vector<const SentinelAnswer*>{&fresh, &stale, nullptr}}) {
        const rsh::SentinelChoice choice = rsh::choose_answer(answers);
        ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
        EXPECT_EQ(choice.address.host, "10.0.0.2");
        EXPECT_EQ(answers[choice.from], &fresh);
    }
}

TEST(SentinelChoice, TiesGoToTheFirst) {
    const SentinelAnswer a = master_answer("10.0.0.1", 6379, 2);
    const SentinelAnswer b = master_answer("10.0.0.2", 6379, 2);
    const rsh::SentinelChoice choice = rsh::choose_answer({&a, &b});
    EXPECT_EQ(choice.address.host, "10.0.0.1");
    EXPECT_EQ(choice.from, 0u);
}

TEST(SentinelChoice, AFailoverInProgressAsksItsLeader) {
    // the leader still names the old master at the old epoch, like the others
    const SentinelAnswer follower = master_answer("10.0.0.1", 6379, 0);
    const SentinelAnswer leader = master_answer("10.0.0.1", 6379, 0, true);
    rsh::SentinelChoice choice = rsh::choose_answer({&follower, &leader});
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::AskPromoted);
    EXPECT_EQ(choice.from, 1u);
    EXPECT_EQ(choice.leaders, std::vector<std::size_t>{1});
    EXPECT_EQ(choice.address.host, "10.0.0.1");
    // after an o_down several try until one is elected: each is asked
    choice = rsh::choose_answer({&leader, &follower, &leader});
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::AskPromoted);
    EXPECT_EQ(choice.leaders, (std::vector<std::size_t>{0, 2}));
    // promotion confirmed: the leader's epoch moved first
    const SentinelAnswer confirmed = master_answer("10.0.0.1", 6379, 1, true);
    choice = rsh::choose_answer({&follower, &confirmed});
    EXPECT_EQ(choice.kind, rsh::SentinelChoice::Kind::AskPromoted);
    // another sentinel already switched at that epoch: follow it
    const SentinelAnswer switched = master_answer("10.0.0.2", 6379, 1);
    choice = rsh::choose_answer({&confirmed, &switched});
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
    EXPECT_EQ(choice.address.host, "10.0.0.2");
    EXPECT_EQ(choice.from, 1u);
    // a failover of an older epoch is someone else's past: ignored
    const SentinelAnswer newer = master_answer("10.0.0.3", 6379, 2);
    choice = rsh::choose_answer({&confirmed, &newer});
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
    EXPECT_EQ(choice.address.host, "10.0.0.3");
}

TEST(SentinelChoice, UnknownAndNoAnswer) {
    SentinelAnswer unknown;
    unknown.kind = SentinelAnswer::Kind::UnknownMaster;
    EXPECT_EQ(rsh::choose_answer({nullptr, &unknown}).kind, rsh::SentinelChoice::Kind::UnknownMaster);
    EXPECT_EQ(rsh::choose_answer({nullptr, nullptr}).kind, rsh::SentinelChoice::Kind::NoAnswer);
    // a sentinel that knows the name wins over one that does not
    const SentinelAnswer known = master_answer("10.0.0.1", 6379, 0);
    EXPECT_EQ(rsh::choose_answer({&unknown, &known}).kind, rsh::SentinelChoice::Kind::Master);
}

TEST(SentinelRound, FollowsTheNewestAnswerAndReportsFailures) {
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "m", 1000);
    const std::size_t dead = round.add(false);
    const std::size_t stale = round.add(false);
    const std::size_t fresh = round.add(false);
    const std::size_t refused = round.add(false);
    EXPECT_EQ(round.prepare(stale, std::nullopt, std::nullopt, false), cmd({"SENTINEL", "MASTER", "m"}));
    round.prepare(fresh, std::nullopt, string("pw"), true);
    round.prepare(refused, std::nullopt, string("bad"), true);
    round.fail(dead, "connection refused");
    const string stale_reply = master_reply("10.0.0.1", "6379", "master", "1");
    const string fresh_reply = "+OK\r\n" + master_reply("10.0.0.2", "6379", "master", "2");
    const string refused_reply = "-WRONGPASS invalid\r\n" + master_reply("10.0.0.3", "6379", "master", "9");
    EXPECT_TRUE(round.feed(stale, stale_reply.data(), stale_reply.size()));
    EXPECT_FALSE(round.feed(fresh, fresh_reply.data(), 3));
    EXPECT_TRUE(round.feed(fresh, fresh_reply.data() + 3, fresh_reply.size() - 3));
    EXPECT_TRUE(round.feed(refused, refused_reply.data(), refused_reply.size()));
    EXPECT_TRUE(round.failed(dead));
    EXPECT_EQ(round.error(dead), "connection refused");
    EXPECT_FALSE(round.failed(stale));
    EXPECT_TRUE(round.failed(refused)) << "an error reply is a failure: its epoch is not believed";
    EXPECT_EQ(round.error(refused), "WRONGPASS invalid");
    const rsh::SentinelChoice choice = round.choose();
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
    EXPECT_EQ(choice.address.host, "10.0.0.2");
    EXPECT_EQ(choice.from, fresh);
}

TEST(SentinelRound, NoAnswerCarriesTheLastFailure) {
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "m", 0);
    round.fail(round.add(false), "timeout");
    round.fail(round.add(true), "connection refused");
    const rsh::SentinelChoice choice = round.choose();
    EXPECT_EQ(choice.kind, rsh::SentinelChoice::Kind::NoAnswer);
    EXPECT_EQ(choice.error, "connection refused");
}

TEST(SentinelRound, ProtocolErrorsFailOneSentinel) {
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "m", 0);
    const std::size_t i = round.add(false);
    round.prepare(i, std::nullopt, std::nullopt, false);
    const string garbage = "?bogus\r\n";
    EXPECT_TRUE(round.feed(i, garbage.data(), garbage.size()));
    EXPECT_TRUE(round.failed(i));
    EXPECT_NE(round.error(i).find("protocol error"), string::npos);
}

// The cosocket driver reuses its rounds: whatever the last round left (a failed
// reader, a reply read through the reader, AUTH, another ask, more sentinels),
// the next one starts afresh.
TEST(SentinelRound, AReusedRoundStartsAfresh) {
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "m", 0);
    for (int i = 0; i < 3; ++i) round.add(false);
    const string garbage = "?bogus\r\n";
    round.prepare(0, std::nullopt, std::nullopt, false);
    EXPECT_TRUE(round.feed(0, garbage.data(), garbage.size()));  // its reader failed
    round.prepare(1, std::nullopt, string("pw"), true);          // AUTH, then through the reader
    const string authed = "+OK\r\n" + master_reply("10.0.0.1", "6379", "master", "3");
    ASSERT_TRUE(round.feed(1, authed.data(), authed.size()));
    round.prepare(2, std::nullopt, std::nullopt, false);
    const string partial = master_reply("10.0.0.2", "6379", "master", "3").substr(0, 20);
    EXPECT_FALSE(round.feed(2, partial.data(), partial.size()));  // left half read

    round.reset(SentinelQuery::Ask::Master, "other", 0);
    EXPECT_EQ(round.size(), 0u);
    EXPECT_THROW(round.failed(0), std::out_of_range);
    for (int i = 0; i < 2; ++i) round.add(false);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(round.prepare(i, std::nullopt, std::nullopt, false), cmd({"SENTINEL", "MASTER", "other"}));
        const string reply = master_reply("127.0.0.1", std::to_string(7000 + i), "master", std::to_string(5 + i));
        ASSERT_TRUE(round.feed(i, reply.data(), reply.size()));
        ASSERT_FALSE(round.failed(i));
    }
    const rsh::SentinelChoice choice = round.choose();
    ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
    EXPECT_EQ(choice.address, (rsh::SentinelAddress{"127.0.0.1", 7001}));  // the higher epoch
    EXPECT_EQ(choice.from, 1u);
}

TEST(SentinelRound, RetriesAreBoundedOnlyOnceAnotherAnswered) {
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "m", 1000);
    const std::size_t healthy = round.add(false);
    const std::size_t retry = round.add(true);
    EXPECT_TRUE(round.retry(retry));
    EXPECT_FALSE(round.retry(healthy));
    round.prepare(healthy, std::nullopt, std::nullopt, false);
    round.fail(healthy, "timeout");
    EXPECT_FALSE(round.retry_budget_ms(2000).has_value()) << "nobody answered: the retry is the only hope";

    rsh::SentinelRound answered(SentinelQuery::Ask::Master, "m", 1000);
    const std::size_t first = answered.add(false);
    answered.add(true);
    answered.prepare(first, std::nullopt, std::nullopt, false);
    const string reply = master_reply("10.0.0.1", "6379", "master", "0");
    answered.feed(first, reply.data(), reply.size());
    // twice what the round took so far, at least the floor
    EXPECT_DOUBLE_EQ(*answered.retry_budget_ms(1001), rsh::SentinelRound::kRetryFloorMs - 1);
    EXPECT_DOUBLE_EQ(*answered.retry_budget_ms(1040), 40);
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
