// The cluster operation without I/O: slot groups, phases, batches per node,
// MULTI/EXEC per multi-command group, and what MOVED, ASK, TRYAGAIN,
// CLUSTERDOWN and node failures lead to.
#include <gtest/gtest.h>

#include "resp_text.hpp"

#include <initializer_list>
#include <string>
#include <vector>

#include "cluster_operation.hpp"
#include "slots.hpp"

namespace {

using rsh::ClusterOperation;
using rsh::NodeAddress;
using rsh::Result;
using std::string;
using rsh_test::cmd;

std::vector<rsh::ReplyPtr> replies(const string& bytes) {
    rsh::ReplyReader reader;
    reader.feed(bytes.data(), bytes.size());
    std::vector<rsh::ReplyPtr> out;
    while (auto r = reader.next()) out.push_back(std::move(r));
    return out;
}

const NodeAddress kA{"a", 1}, kB{"b", 2}, kC{"c", 3};

// Three masters: slots 0-5460 on a, 5461-10922 on b, the rest on c.
std::shared_ptr<rsh::ClusterTopology> three_masters() {
    auto topology = std::make_shared<rsh::ClusterTopology>();
    rsh::SlotMap map;
    map.assign(0, 5460, kA);
    map.assign(5461, 10922, kB);
    map.assign(10923, 16383, kC);
    topology->replace(map);
    return topology;
}

rsh::KeyNaming prefix(const string& p) { return rsh::KeyNaming{p, std::nullopt}; }

// set("session", "abc", "v", 60, 1000[, "old", 10]) with metadata { web = alice }.
void load_set_with_metadata(rsh::Operation& loaded, const rsh::KeyNaming& naming, bool with_old_key) {
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = "v";
    args.ttl = 60;
    args.current_time = 1000;
    if (with_old_key) {
        args.old_key = "old";
        args.stale_ttl = 10;
    }
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
}

// sessions:session:abc is slot 8350 (b); sessions:session:web:alice slot 11094 (c);
// sessions:session:old is computed below.
// A cluster older than Redis 7.0 (no CLUSTER SHARDS): EXPIRE NX/GT/LT by script,
// also when the first call was built before the slot map load found it out.
TEST(ClusterOperation, RedisBefore7UsesTtlScripts) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_set_with_metadata(loaded, naming, true);
    const string meta = "sessions:session:web:alice";
    const string extend = cmd({"EVAL", string(rsh::ttl_script::kExtend), "1", meta, "60"});
    const string shorten = cmd({"EVAL", string(rsh::ttl_script::kShorten), "1", "sessions:session:old", "10"});
    for (bool known_before_start : {true, false}) {
        SCOPED_TRACE(known_before_start);
        ClusterOperation op;
        auto topology = three_masters();
        if (known_before_start) topology->shards_unsupported();
        op.start(loaded, naming, topology, {});
        if (!known_before_start) topology->shards_unsupported();  // the first refresh, before any send
        ASSERT_TRUE(op.plan_round());
        string all;
        for (auto& b : op.batches()) all += b.commands.bytes();
        EXPECT_NE(all.find(extend), string::npos);
        EXPECT_EQ(all.find("NX"), string::npos);
        for (std::size_t i = 0; i < op.batches().size(); ++i) {
            auto r = replies(op.batches()[i].node == kC
                                 ? "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:0\r\n:1\r\n:1\r\n"
                                 : "+OK\r\n");
            op.node_replies(i, r);
        }
        ASSERT_FALSE(op.end_round().finished);
        ASSERT_TRUE(op.plan_round());
        all.clear();
        for (auto& b : op.batches()) all += b.commands.bytes();
        EXPECT_NE(all.find(shorten), string::npos);
        EXPECT_EQ(all.find(" LT"), string::npos);
        for (std::size_t i = 0; i < op.batches().size(); ++i) {
            auto r = replies(":1\r\n");
            op.node_replies(i, r);
        }
        EXPECT_TRUE(op.end_round().finished);
        EXPECT_EQ(op.result().kind, Result::Kind::Ok);
    }
}

// A Redis 6 master in a cluster whose CLUSTER SHARDS answered (an upgrade under
// way) refuses EXPIRE NX at queue time: the call goes again in the script forms.
TEST(ClusterOperation, ExpireFlagsRefusedSwitchesToTtlScripts) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_set_with_metadata(loaded, naming, false);
    const string meta = "sessions:session:web:alice";
    ClusterOperation op;
    auto topology = three_masters();
    op.start(loaded, naming, topology, {});
    ASSERT_TRUE(op.plan_round());
    for (std::size_t i = 0; i < op.batches().size(); ++i) {
        const string arity = "-ERR wrong number of arguments for 'expire' command\r\n";
        auto r = replies(op.batches()[i].node == kC
                             ? "+OK\r\n+QUEUED\r\n+QUEUED\r\n" + arity + arity +
                                   "-EXECABORT Transaction discarded because of previous errors.\r\n"
                             : "+OK\r\n");
        op.node_replies(i, r);
    }
    ASSERT_FALSE(op.end_round().finished);
    EXPECT_FALSE(topology->use_shards());
    ASSERT_TRUE(op.plan_round());
    string all;
    for (auto& b : op.batches()) all += b.commands.bytes();
    EXPECT_NE(all.find(cmd({"EVAL", string(rsh::ttl_script::kExtend), "1", meta, "60"})), string::npos);
    EXPECT_EQ(all.find("NX"), string::npos);
    for (std::size_t i = 0; i < op.batches().size(); ++i) {
        auto r = replies(op.batches()[i].node == kC
                             ? "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:0\r\n:1\r\n:1\r\n"
                             : "+OK\r\n");
        op.node_replies(i, r);
    }
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

TEST(ClusterOperation, SetSplitsIntoAddPhaseThenRemovePhase) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_set_with_metadata(loaded, naming, true);
    ClusterOperation op;
    auto topology = three_masters();
    op.start(loaded, naming, topology, {});
    ASSERT_EQ(op.phase_count(), 2);

    ASSERT_TRUE(op.plan_round());
    auto& round1 = op.batches();
    ASSERT_EQ(round1.size(), 2u);
    EXPECT_EQ(round1[0].node, kB);
    EXPECT_EQ(round1[0].commands.bytes(), cmd({"SET", "sessions:session:abc", "v", "EX", "60"}));
    EXPECT_EQ(round1[1].node, kC);
    const string meta = "sessions:session:web:alice";
    EXPECT_EQ(round1[1].commands.bytes(),
              cmd({"MULTI"}) + cmd({"ZREMRANGEBYSCORE", meta, "0", "999"}) + cmd({"ZADD", meta, "1060", "abc"}) +
                  cmd({"EXPIRE", meta, "60", "NX"}) + cmd({"EXPIRE", meta, "60", "GT"}) + cmd({"EXEC"}));
    auto r0 = replies("+OK\r\n");
    op.node_replies(0, r0);
    auto r1 = replies("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n:0\r\n:1\r\n:1\r\n:0\r\n");
    op.node_replies(1, r1);
    auto outcome = op.end_round();
    EXPECT_FALSE(outcome.finished);

    ASSERT_TRUE(op.plan_round());
    auto& round2 = op.batches();
    string all;
    for (auto& b : round2) all += b.commands.bytes();
    EXPECT_NE(all.find(cmd({"EXPIRE", "sessions:session:old", "10", "LT"})), string::npos);
    EXPECT_NE(all.find(cmd({"ZREM", meta, "old"})), string::npos);
    for (std::size_t i = 0; i < round2.size(); ++i) {
        auto r = replies(string(":1\r\n"));
        op.node_replies(i, r);
    }
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

// The batch that carries a set's large value marks where it is (the cosocket
// driver sends it from the caller's string); the other batches mark nothing.
TEST(ClusterOperation, MarksALargeValueInItsBatch) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    const string value(rsh::Operation::kSeparateValue, 'v');
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = value;
    args.ttl = 60;
    args.current_time = 1000;
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 2u);
    rsh::Operation raw;
    raw.start_raw(op.batches()[0].commands);  // node b: the SET
    const std::string_view request = *raw.next_request(0);
    ASSERT_NE(raw.value_offset(), rsh::CommandBuffer::kNone);
    EXPECT_EQ(raw.value_size(), value.size());
    EXPECT_EQ(request.substr(raw.value_offset(), raw.value_size()), value);
    raw.start_raw(op.batches()[1].commands);  // node c: the metadata
    raw.next_request(0);
    EXPECT_EQ(raw.value_offset(), rsh::CommandBuffer::kNone);
}

TEST(ClusterOperation, PhaseTwoNeverRunsAfterAFailedPhaseOne) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = "v";
    args.ttl = 60;
    args.current_time = 1000;
    args.old_key = "old";
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    auto ok = replies("+OK\r\n");
    op.node_replies(0, ok);
    auto wrongtype = replies("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n"
                             "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:1\r\n:1\r\n:0\r\n");
    op.node_replies(1, wrongtype);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Error);
    EXPECT_EQ(op.result().text.rfind("WRONGTYPE", 0), 0u);
    EXPECT_FALSE(op.plan_round());
}

TEST(ClusterOperation, HashTaggedPrefixIsOneTransaction) {
    auto naming = prefix("{sessions}");
    rsh::Operation loaded;
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = "v";
    args.ttl = 60;
    args.current_time = 1000;
    args.old_key = "old";
    args.stale_ttl = 10;
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    EXPECT_EQ(op.phase_count(), 1);
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    const string& bytes = op.batches()[0].commands.bytes();
    EXPECT_EQ(bytes.rfind(cmd({"MULTI"}), 0), 0u);
    EXPECT_NE(bytes.find(cmd({"EXPIRE", "{sessions}:session:old", "10", "LT"})), string::npos);
    EXPECT_EQ(bytes.substr(bytes.size() - cmd({"EXEC"}).size()), cmd({"EXEC"}));
}

TEST(ClusterOperation, MovedPatchesTheMapAndResendsTheGroup) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    auto topology = three_masters();
    op.start(loaded, naming, topology, {});
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].node, kB);
    auto moved = replies("-MOVED 8350 c:3\r\n");
    op.node_replies(0, moved);
    auto outcome = op.end_round();
    EXPECT_FALSE(outcome.finished);
    EXPECT_EQ(outcome.backoff_ms, 0);
    EXPECT_EQ(topology->map()->node_for(8350)->text(), "c:3");
    EXPECT_TRUE(topology->take_refresh());
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].node, kC);
    auto value = replies("$5\r\nhello\r\n");
    op.node_replies(0, value);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::String);
    EXPECT_EQ(op.result().text, "hello");
}

TEST(ClusterOperation, AskSendsAskingBeforeMultiAndLeavesTheMap) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_delete(naming);
    args.name = "session";
    args.key = "abc";
    args.current_time = 1000;
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
    ClusterOperation op;
    auto topology = three_masters();
    op.start(loaded, naming, topology, {});
    ASSERT_EQ(op.phase_count(), 2);
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].commands.bytes(), cmd({"UNLINK", "sessions:session:abc"}));
    auto ok = replies(":1\r\n");
    op.node_replies(0, ok);
    op.end_round();
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].node, kC);
    auto ask = replies("+OK\r\n-ASK 11094 a:1\r\n+QUEUED\r\n-EXECABORT Transaction discarded\r\n");
    op.node_replies(0, ask);
    EXPECT_FALSE(op.end_round().finished);
    EXPECT_EQ(topology->map()->node_for(11094)->text(), "c:3");  // ASK never updates the map
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].node, kA);
    const string meta = "sessions:session:web:alice";
    EXPECT_EQ(op.batches()[0].commands.bytes(), cmd({"ASKING"}) + cmd({"MULTI"}) +
                                                    cmd({"ZREMRANGEBYSCORE", meta, "0", "999"}) +
                                                    cmd({"ZREM", meta, "abc"}) + cmd({"EXEC"}));
    auto done = replies("+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:0\r\n:1\r\n");
    op.node_replies(0, done);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

TEST(ClusterOperation, AskOnAGroupOfSeveralKeysSplitsItPerKeyBackToTheSource) {
    auto naming = prefix("{sessions}");
    rsh::Operation loaded;
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = "v";
    args.ttl = 60;
    args.current_time = 1000;
    args.metadata = rsh::Metadata{{{"web", "alice"}}};
    ClusterOperation op;
    auto topology = three_masters();  // slot 12738: c
    op.start(loaded, naming, topology, {});
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    // the new session key is not on the source yet; the metadata key is
    auto ask = replies("+OK\r\n-ASK 12738 a:1\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
                       "-EXECABORT Transaction discarded\r\n");
    op.node_replies(0, ask);
    EXPECT_FALSE(op.end_round().finished);
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    EXPECT_EQ(op.batches()[0].node, kC);  // per key, to the source again
    const string meta = "{sessions}:session:web:alice";
    EXPECT_EQ(op.batches()[0].commands.bytes(),
              cmd({"SET", "{sessions}:session:abc", "v", "EX", "60"}) + cmd({"MULTI"}) +
                  cmd({"ZREMRANGEBYSCORE", meta, "0", "999"}) + cmd({"ZADD", meta, "1060", "abc"}) +
                  cmd({"EXPIRE", meta, "60", "NX"}) + cmd({"EXPIRE", meta, "60", "GT"}) + cmd({"EXEC"}));
    auto split = replies("-ASK 12738 a:1\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
                         "*4\r\n:0\r\n:1\r\n:1\r\n:0\r\n");
    op.node_replies(0, split);
    EXPECT_FALSE(op.end_round().finished);
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    EXPECT_EQ(op.batches()[0].node, kA);  // only the missing key goes to the target
    EXPECT_EQ(op.batches()[0].commands.bytes(),
              cmd({"ASKING"}) + cmd({"SET", "{sessions}:session:abc", "v", "EX", "60"}));
    auto ok = replies("+OK\r\n+OK\r\n");
    op.node_replies(0, ok);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

TEST(ClusterOperation, RedirectionsAreCapped) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {2, 3, {}});
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(op.plan_round());
        auto moved = replies(i % 2 ? "-MOVED 8350 b:2\r\n" : "-MOVED 8350 c:3\r\n");
        op.node_replies(0, moved);
        op.end_round();
    }
    ASSERT_TRUE(op.finished());
    EXPECT_EQ(op.result().text, "too many cluster redirections (last: MOVED 8350 c:3)");
}

TEST(ClusterOperation, TryAgainAndClusterDownBackOff) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    auto again = replies("-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
    op.node_replies(0, again);
    auto first = op.end_round();
    EXPECT_GT(first.backoff_ms, 0);
    ASSERT_TRUE(op.plan_round());
    auto down = replies("-CLUSTERDOWN The cluster is down\r\n");
    op.node_replies(0, down);
    auto second = op.end_round();
    EXPECT_GT(second.backoff_ms, first.backoff_ms);
    EXPECT_TRUE(second.refresh);
    EXPECT_EQ(op.last_retry_error(), "CLUSTERDOWN The cluster is down");
}

// Valkey words its errors its own way ("Valkey is loading..."): the error code,
// the first word, is what counts.
TEST(ClusterOperation, LoadingBacksOffWhateverTheServerSays) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    for (const string error : {"LOADING Redis is loading the dataset in memory",
                               "LOADING Valkey is loading the dataset in memory"}) {
        ClusterOperation op;
        op.start(loaded, naming, three_masters(), {});
        ASSERT_TRUE(op.plan_round());
        auto loading = replies("-" + error + "\r\n");
        op.node_replies(0, loading);
        auto outcome = op.end_round();
        EXPECT_FALSE(outcome.finished) << error;
        EXPECT_GT(outcome.backoff_ms, 0) << error;
        EXPECT_EQ(op.last_retry_error(), error);
    }
}

TEST(ClusterOperation, NodeFailuresRetryUpToMaxConnectionAttempts) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {5, 2, {}});
    ASSERT_TRUE(op.plan_round());
    op.node_failed(0, "connection refused", true);
    auto outcome = op.end_round();
    EXPECT_TRUE(outcome.refresh);
    ASSERT_TRUE(op.plan_round());
    op.node_failed(0, "connection refused", true);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().text, "connection refused");
}

TEST(ClusterOperation, NoNodeForASlotWaitsForARefreshInsteadOfSucceeding) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";  // slot 8350
    auto topology = std::make_shared<rsh::ClusterTopology>();
    rsh::SlotMap map;
    map.assign(0, 5460, kA);  // 5461-16383 uncovered: their master failed
    topology->replace(map);
    ClusterOperation op;
    op.start(loaded, naming, topology, {});
    ASSERT_TRUE(op.plan_round());
    EXPECT_TRUE(op.batches().empty());
    auto outcome = op.end_round();
    EXPECT_FALSE(outcome.finished);
    EXPECT_TRUE(outcome.refresh);
    EXPECT_GT(outcome.backoff_ms, 0);
    EXPECT_EQ(op.last_retry_error(), "CLUSTERDOWN no known node serves slot 8350");
}

TEST(ClusterOperation, TimeoutIsNotRetried) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    op.node_failed(0, "timeout", false);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().text, "timeout");
}

// A stalled master answers what waited in its socket when it wakes, before it
// learns of its replica's promotion: after a failed round trip, a node's next
// batch is a lone PING, and the call's commands go only after its answer.
TEST(ClusterOperation, ANodeThatTimedOutIsProbedBeforeTheNextCallWritesToIt) {
    auto naming = prefix("sessions");
    auto topology = three_masters();
    rsh::Operation loaded;
    load_set_with_metadata(loaded, naming, false);
    const string set_cmd = cmd({"SET", "sessions:session:abc", "v", "EX", "60"});

    ClusterOperation first;
    first.start(loaded, naming, topology, {});
    ASSERT_TRUE(first.plan_round());
    ASSERT_EQ(first.batches()[0].node, kB);
    first.node_failed(0, "timeout", false);
    EXPECT_TRUE(first.end_round().finished);
    EXPECT_TRUE(topology->suspected(kB));
    EXPECT_FALSE(topology->suspected(kC));

    ClusterOperation second;
    second.start(loaded, naming, topology, {});
    ASSERT_TRUE(second.plan_round());
    ASSERT_EQ(second.batches().size(), 2u);
    EXPECT_EQ(second.batches()[0].node, kB);
    EXPECT_TRUE(second.batches()[0].probe);
    EXPECT_EQ(second.batches()[0].commands.bytes(), cmd({"PING"}));
    EXPECT_FALSE(second.batches()[1].probe);  // c answered: its groups go now
    auto pong = replies("+PONG\r\n");
    second.node_replies(0, pong);
    auto meta = replies("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n:0\r\n:1\r\n:1\r\n:0\r\n");
    second.node_replies(1, meta);
    auto outcome = second.end_round();
    EXPECT_FALSE(outcome.finished);
    EXPECT_FALSE(outcome.refresh);
    EXPECT_EQ(outcome.backoff_ms, 0);
    EXPECT_FALSE(topology->suspected(kB));
    ASSERT_TRUE(second.plan_round());
    ASSERT_EQ(second.batches().size(), 1u);
    EXPECT_FALSE(second.batches()[0].probe);
    EXPECT_EQ(second.batches()[0].commands.bytes(), set_cmd);
    auto ok = replies("+OK\r\n");
    second.node_replies(0, ok);
    EXPECT_TRUE(second.end_round().finished);
    EXPECT_EQ(second.result().kind, Result::Kind::Ok);

    ClusterOperation third;  // b answered: no probe any more
    third.start(loaded, naming, topology, {});
    ASSERT_TRUE(third.plan_round());
    EXPECT_FALSE(third.batches()[0].probe);
    EXPECT_EQ(third.batches()[0].commands.bytes(), set_cmd);
}

TEST(ClusterOperation, AProbeThatFailsLeavesTheNodeSuspectAndSendsNothing) {
    auto naming = prefix("sessions");
    auto topology = three_masters();
    topology->suspect(kB);
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";  // b
    ClusterOperation op;
    op.start(loaded, naming, topology, {});
    ASSERT_TRUE(op.plan_round());
    ASSERT_TRUE(op.batches()[0].probe);
    op.node_failed(0, "timeout", false);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().text, "timeout");
    EXPECT_TRUE(topology->suspected(kB));

    ClusterOperation loading;  // an error reply: wait and ask again, still suspect
    loading.start(loaded, naming, topology, {});
    ASSERT_TRUE(loading.plan_round());
    ASSERT_TRUE(loading.batches()[0].probe);
    auto busy = replies("-LOADING Redis is loading the dataset in memory\r\n");
    loading.node_replies(0, busy);
    auto outcome = loading.end_round();
    EXPECT_FALSE(outcome.finished);
    EXPECT_TRUE(outcome.refresh);
    EXPECT_GT(outcome.backoff_ms, 0);
    EXPECT_TRUE(topology->suspected(kB));
    ASSERT_TRUE(loading.plan_round());
    EXPECT_TRUE(loading.batches()[0].probe);
}

TEST(ClusterOperation, ReadMetadataAndMissingValues) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_read_metadata(naming);
    args.name = "session";
    args.audience = "web";
    args.subject = "alice";
    args.current_time = 1000;
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    auto map = replies("*2\r\n$3\r\nabc\r\n$4\r\n1060\r\n");
    op.node_replies(0, map);
    EXPECT_TRUE(op.end_round().finished);
    ASSERT_EQ(op.result().kind, Result::Kind::Map);
    ASSERT_EQ(op.result().map.size(), 1u);
    EXPECT_EQ(op.result().map[0].second, "1060");

    auto& get = loaded.start_get(naming);
    get.name = "session";
    get.key = "missing";
    op.start(loaded, naming, three_masters(), {});
    ASSERT_TRUE(op.plan_round());
    auto nil = replies("$-1\r\n");
    op.node_replies(0, nil);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Nil);
}

// A reused cluster operation: each read_metadata's map is its own reply's pairs.
TEST(ClusterOperation, ReusedReadMetadataGivesEachCallItsOwnMap) {
    using Map = std::vector<std::pair<string, string>>;
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    ClusterOperation op;
    auto topology = three_masters();
    auto read = [&](const string& reply) -> const Result& {
        auto& args = loaded.start_read_metadata(naming);
        args.name = "session";
        args.audience = "web";
        args.subject = "alice";
        args.current_time = 1000;
        op.start(loaded, naming, topology, {});
        EXPECT_TRUE(op.plan_round());
        auto r = replies(reply);
        op.node_replies(0, r);
        EXPECT_TRUE(op.end_round().finished);
        return op.result();
    };
    EXPECT_EQ(read("*4\r\n$3\r\nabc\r\n$4\r\n1060\r\n$3\r\ndef\r\n$4\r\n1070\r\n").map,
              (Map{{"abc", "1060"}, {"def", "1070"}}));
    EXPECT_EQ(read("*2\r\n$3\r\ndef\r\n$4\r\n1071\r\n").map, (Map{{"def", "1071"}}));
    EXPECT_EQ(read("*2\r\n$3\r\nabc\r\n:5\r\n").kind, Result::Kind::Error);
    const Result& empty = read("*0\r\n");
    EXPECT_EQ(empty.kind, Result::Kind::Map);
    EXPECT_TRUE(empty.map.empty());
}

}  // namespace

namespace {

rsh::ClusterPolicy waiting_for(int replicas) {
    rsh::ClusterPolicy policy;
    policy.durability.replicas = replicas;
    policy.durability.timeout_ms = 100;
    return policy;
}

// A plain set on b, with wait_replicas: the batch ends with WAIT, read with it.
void load_plain_set(rsh::Operation& loaded, const rsh::KeyNaming& naming) {
    auto& args = loaded.start_set(naming);
    args.name = "session";
    args.key = "abc";
    args.value = "v";
    args.ttl = 60;
}

TEST(ClusterOperationDurability, EveryWriteBatchEndsWithWait) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_plain_set(loaded, naming);
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), waiting_for(1));
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    EXPECT_EQ(op.batches()[0].commands.bytes(),
              cmd({"SET", "sessions:session:abc", "v", "EX", "60"}) + cmd({"WAIT", "1", "100"}));
    auto r = replies("+OK\r\n:1\r\n");
    op.node_replies(0, r);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

TEST(ClusterOperationDurability, ShortfallFailsTheCall) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_plain_set(loaded, naming);
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), waiting_for(1));
    ASSERT_TRUE(op.plan_round());
    auto r = replies("+OK\r\n:0\r\n");
    op.node_replies(0, r);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Error);
    EXPECT_EQ(op.result().text,
              "write not durable: 0 of 1 replicas (wait_replicas) acknowledged it within 100 ms (wait_timeout)");
}

TEST(ClusterOperationDurability, MovedGroupWaitsOnItsNewNode) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    load_plain_set(loaded, naming);
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), waiting_for(1));
    ASSERT_TRUE(op.plan_round());
    // nothing was written on b: its WAIT (0 replicas) says nothing of this call
    auto moved = replies("-MOVED 8350 c:3\r\n:0\r\n");
    op.node_replies(0, moved);
    EXPECT_FALSE(op.end_round().finished);
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 1u);
    EXPECT_EQ(op.batches()[0].node, kC);
    auto ok = replies("+OK\r\n:1\r\n");
    op.node_replies(0, ok);
    EXPECT_TRUE(op.end_round().finished);
    EXPECT_EQ(op.result().kind, Result::Kind::Ok);
}

TEST(ClusterOperationDurability, AProbeCarriesNoWait) {
    auto naming = prefix("sessions");
    auto topology = three_masters();
    topology->suspect(kB);
    rsh::Operation loaded;
    load_set_with_metadata(loaded, naming, false);
    ClusterOperation op;
    op.start(loaded, naming, topology, waiting_for(1));
    ASSERT_TRUE(op.plan_round());
    ASSERT_EQ(op.batches().size(), 2u);
    EXPECT_EQ(op.batches()[0].commands.bytes(), cmd({"PING"}));
    EXPECT_NE(op.batches()[1].commands.bytes().find(cmd({"WAIT", "1", "100"})), string::npos);
}

TEST(ClusterOperationDurability, ReadsNeverWait) {
    auto naming = prefix("sessions");
    rsh::Operation loaded;
    auto& args = loaded.start_get(naming);
    args.name = "session";
    args.key = "abc";
    ClusterOperation op;
    op.start(loaded, naming, three_masters(), waiting_for(1));
    ASSERT_TRUE(op.plan_round());
    EXPECT_EQ(op.batches()[0].commands.bytes(), cmd({"GET", "sessions:session:abc"}));
}

}  // namespace
