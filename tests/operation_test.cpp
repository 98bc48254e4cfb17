// Operation driven without I/O: exact request bytes per round trip, replies fed
// as RESP bytes in fragments, and the Result each call ends with.
#include <gtest/gtest.h>

#include "resp_text.hpp"

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "operation.hpp"

namespace {

using rsh::DeleteArgs;
using rsh::GetArgs;
using rsh::HandshakeArgs;
using rsh::KeyNaming;
using rsh::Metadata;
using rsh::Operation;
using rsh::ProtocolError;
using rsh::ReadMetadataArgs;
using rsh::Result;
using rsh::SetArgs;
using std::string;
using rsh_test::cmd;
using rsh_test::bulk;

// Our own RESP encoder, independent of CommandBuffer.

const string kOk = "+OK\r\n";
const string kQueued = "+QUEUED\r\n";
string queued(int n) {
    string out;
    for (int i = 0; i < n; ++i) out += kQueued;
    return out;
}

struct Round {
    string request;  // expected bytes
    string replies;  // fed back
};

using Factory = std::function<Operation()>;

// Runs the rounds with the replies fed in pieces of `piece` bytes (0 = whole),
// checking each request's bytes; returns the Result.
Result drive(const Factory& make, long version, const std::vector<Round>& rounds, std::size_t piece) {
    Operation op = make();
    EXPECT_FALSE(op.received_bytes());
    for (std::size_t i = 0; i < rounds.size(); ++i) {
        SCOPED_TRACE("round " + std::to_string(i) + " piece " + std::to_string(piece));
        std::optional<std::string_view> request = op.next_request(version);
        EXPECT_TRUE(request.has_value());
        if (!request) return Result::error("<no request>");
        EXPECT_EQ(*request, rounds[i].request);
        // No second request while this one is in flight.
        EXPECT_FALSE(op.next_request(version).has_value());
        const string& wire = rounds[i].replies;
        const std::size_t step = piece == 0 ? wire.size() : piece;
        bool done = false;
        for (std::size_t at = 0; at < wire.size(); at += step) {
            EXPECT_FALSE(done);
            done = op.feed(wire.data() + at, std::min(step, wire.size() - at));
        }
        EXPECT_TRUE(done);
        EXPECT_TRUE(op.received_bytes());
        EXPECT_EQ(op.finished(), i + 1 == rounds.size());
    }
    EXPECT_TRUE(op.finished());
    EXPECT_FALSE(op.next_request(version).has_value());
    // Anything more from the server is a protocol error.
    EXPECT_THROW(op.feed("+OK\r\n", 5), ProtocolError);
    return op.result();
}

// The same rounds, whole and in several fragment sizes: the Result must not depend on them.
Result run(const Factory& make, long version, const std::vector<Round>& rounds) {
    Result first = drive(make, version, rounds, 0);
    for (std::size_t piece : {1, 2, 3, 7, 64}) {
        Result r = drive(make, version, rounds, piece);
        EXPECT_EQ(static_cast<int>(r.kind), static_cast<int>(first.kind)) << "piece " << piece;
        EXPECT_EQ(r.text, first.text) << "piece " << piece;
        EXPECT_EQ(r.map, first.map) << "piece " << piece;
        EXPECT_EQ(r.version, first.version) << "piece " << piece;
    }
    return first;
}

#define EXPECT_KIND(result, k) EXPECT_EQ(static_cast<int>((result).kind), static_cast<int>(Result::Kind::k)) << (result).text

KeyNaming naming() {
    KeyNaming n;
    n.prefix = "pre";
    return n;
}

SetArgs set_args() {
    SetArgs a;
    a.name = "session";
    a.key = "new";
    a.value = string("v\0\r\n", 4);
    a.ttl = 3600;
    a.current_time = 1700000000;
    a.stale_ttl = 10;
    return a;
}

Metadata two_entries() {
    Metadata m;
    m.entries = {{"aud1", "sub1"}, {"aud2", "sub2"}};
    return m;
}

const string kSetNew = cmd({"SET", "pre:session:new", string("v\0\r\n", 4), "EX", "3600"});

// ---------------------------------------------------------------- set, plain

TEST(OperationSet, PlainIsOneSet) {
    Factory make = [] { return Operation::set(naming(), set_args()); };
    for (long version : {70015L, 60200L, 0L}) {
        Result r = run(make, version, {{kSetNew, kOk}});
        EXPECT_KIND(r, Ok);
    }
}

// A value of kSeparateValue bytes or more is located in the request (the cosocket
// driver sends it from the caller's string); a shorter one, and other methods, are not.
TEST(OperationSet, LocatesALargeValueInTheRequest) {
    for (const bool with_metadata : {false, true}) {
        for (long version : {70000L, 60200L}) {
            SetArgs a = set_args();
            a.value = string(Operation::kSeparateValue, 'x') + string("\0\r\n", 3);
            if (with_metadata) a.metadata = two_entries();
            Operation op = Operation::set(naming(), a);
            const std::string_view request = *op.next_request(version);
            std::string_view main = request;
            if (op.value_offset() == rsh::CommandBuffer::kNone) {
                // Redis 6 with metadata: TTL first, the value in the next round
                ASSERT_TRUE(with_metadata && version < 70000);
                ASSERT_TRUE(op.feed(":-2\r\n", 5));
                main = *op.next_request(0);
            }
            ASSERT_NE(op.value_offset(), rsh::CommandBuffer::kNone);
            EXPECT_EQ(op.value_size(), a.value.size());
            EXPECT_EQ(main.substr(op.value_offset(), op.value_size()), a.value);
        }
    }
    SetArgs small = set_args();
    small.value = string(Operation::kSeparateValue - 1, 'x');
    Operation op = Operation::set(naming(), small);
    op.next_request(70000);
    EXPECT_EQ(op.value_offset(), rsh::CommandBuffer::kNone);
}

TEST(OperationSet, PlainError) {
    Factory make = [] { return Operation::set(naming(), set_args()); };
    Result r = run(make, 70000, {{kSetNew, "-OOM command not allowed when used memory > 'maxmemory'.\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "OOM command not allowed when used memory > 'maxmemory'.");
}

// ------------------------------------------------------- set, Redis >= 7.0

string redis7_old_and_meta_request() {
    string req = cmd({"MULTI"}) + kSetNew + cmd({"EXPIRE", "pre:session:old", "10", "LT"});
    for (const auto& [aud, sub] : two_entries().entries) {
        const string meta = "pre:session:" + aud + ":" + sub;
        req += cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999"});
        req += cmd({"ZADD", meta, "1700003600", "new"});
        req += cmd({"ZREM", meta, "old"});
        req += cmd({"EXPIRE", meta, "3600", "NX"});
        req += cmd({"EXPIRE", meta, "3600", "GT"});
    }
    return req + cmd({"EXEC"});
}

Factory set_old_and_meta() {
    return [] {
        SetArgs a = set_args();
        a.old_key = "old";
        a.metadata = two_entries();
        return Operation::set(naming(), a);
    };
}

// 1 SET + 1 EXPIRE + 2 * 5 metadata commands inside MULTI/EXEC.
const int kOldMetaCommands = 12;
string old_meta_exec_ok() {
    return "*12\r\n+OK\r\n:1\r\n:0\r\n:1\r\n:1\r\n:1\r\n:0\r\n:0\r\n:1\r\n:1\r\n:1\r\n:0\r\n";
}

TEST(OperationSet, Redis7OldKeyAndMetadataInOneTransaction) {
    for (long version : {70000L, 70015L, 70200L}) {
        Result r = run(set_old_and_meta(), version,
                       {{redis7_old_and_meta_request(), kOk + queued(kOldMetaCommands) + old_meta_exec_ok()}});
        EXPECT_KIND(r, Ok);
    }
}

TEST(OperationSet, Redis7OldKeyOnly) {
    Factory make = [] {
        SetArgs a = set_args();
        a.old_key = "old";
        return Operation::set(naming(), a);
    };
    const string req = cmd({"MULTI"}) + kSetNew + cmd({"EXPIRE", "pre:session:old", "10", "LT"}) + cmd({"EXEC"});
    Result r = run(make, 70000, {{req, kOk + queued(2) + "*2\r\n+OK\r\n:0\r\n"}});
    EXPECT_KIND(r, Ok);
}

TEST(OperationSet, Redis7MetadataOnly) {
    Factory make = [] {
        SetArgs a = set_args();
        Metadata m;
        m.entries = {{"aud", "sub"}};
        a.metadata = m;
        return Operation::set(naming(), a);
    };
    const string meta = "pre:session:aud:sub";
    const string req = cmd({"MULTI"}) + kSetNew + cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999"}) +
                       cmd({"ZADD", meta, "1700003600", "new"}) + cmd({"EXPIRE", meta, "3600", "NX"}) +
                       cmd({"EXPIRE", meta, "3600", "GT"}) + cmd({"EXEC"});
    Result r = run(make, 70015, {{req, kOk + queued(5) + "*5\r\n+OK\r\n:0\r\n:1\r\n:1\r\n:0\r\n"}});
    EXPECT_KIND(r, Ok);
}

TEST(OperationSet, FractionalCurrentTimeInScores) {
    Factory make = [] {
        SetArgs a = set_args();
        a.current_time = 1700000000.5;
        Metadata m;
        m.entries = {{"a", "s"}};
        a.metadata = m;
        return Operation::set(naming(), a);
    };
    const string meta = "pre:session:a:s";
    const string req = cmd({"MULTI"}) + kSetNew + cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999.5"}) +
                       cmd({"ZADD", meta, "1700003600.5", "new"}) + cmd({"EXPIRE", meta, "3600", "NX"}) +
                       cmd({"EXPIRE", meta, "3600", "GT"}) + cmd({"EXEC"});
    EXPECT_KIND(run(make, 70000, {{req, kOk + queued(5) + "*5\r\n+OK\r\n:0\r\n:1\r\n:1\r\n:0\r\n"}}), Ok);
}

// ------------------------------------------------------- transaction results

TEST(OperationSet, ErrorInsideExecArray) {
    const string exec = "*12\r\n+OK\r\n:1\r\n:0\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
                        ":1\r\n:1\r\n:0\r\n-ERR second\r\n:1\r\n:1\r\n:1\r\n:0\r\n";
    Result r = run(set_old_and_meta(), 70000,
                   {{redis7_old_and_meta_request(), kOk + queued(kOldMetaCommands) + exec}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "WRONGTYPE Operation against a key holding the wrong kind of value");
}

TEST(OperationSet, ErrorAsLastExecElement) {
    const string exec = "*12\r\n+OK\r\n:1\r\n:0\r\n:1\r\n:1\r\n:1\r\n:0\r\n:0\r\n:1\r\n:1\r\n:1\r\n-ERR last\r\n";
    Result r = run(set_old_and_meta(), 70000,
                   {{redis7_old_and_meta_request(), kOk + queued(kOldMetaCommands) + exec}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "ERR last");
}

TEST(OperationSet, QueueTimeErrorWins) {
    // Redis rejects a command at queue time, then EXEC answers EXECABORT.
    string replies = kOk + queued(2) + "-ERR syntax error\r\n" + queued(8) + "-ERR another\r\n" +
                     "-EXECABORT Transaction discarded because of previous errors.\r\n";
    Result r = run(set_old_and_meta(), 70000, {{redis7_old_and_meta_request(), replies}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "ERR syntax error");
}

TEST(OperationSet, MultiErrorWins) {
    string replies = "-ERR MULTI calls can not be nested\r\n" + queued(kOldMetaCommands) + old_meta_exec_ok();
    Result r = run(set_old_and_meta(), 70000, {{redis7_old_and_meta_request(), replies}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "ERR MULTI calls can not be nested");
}

TEST(OperationSet, ExecNilIsAborted) {
    Result r = run(set_old_and_meta(), 70000,
                   {{redis7_old_and_meta_request(), kOk + queued(kOldMetaCommands) + "*-1\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "transaction aborted");
}

TEST(OperationSet, ExecNotAnArray) {
    Result r = run(set_old_and_meta(), 70000,
                   {{redis7_old_and_meta_request(), kOk + queued(kOldMetaCommands) + ":1\r\n"}});
    EXPECT_KIND(r, Error);
}

// ------------------------------------------------------- set, Redis < 7.0

// EXPIRE NX + GT by script (ttl_script::kExtend): the metadata set's TTL only grows.
string extend_ttl(const string& key, const string& ttl) {
    return cmd({"EVAL", string(rsh::ttl_script::kExtend), "1", key, ttl});
}

string old_redis_main_request(bool expire_old) {
    string req = cmd({"MULTI"}) + kSetNew;
    if (expire_old) req += cmd({"EXPIRE", "pre:session:old", "10"});
    for (const auto& [aud, sub] : two_entries().entries) {
        const string meta = "pre:session:" + aud + ":" + sub;
        req += cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999"});
        req += cmd({"ZADD", meta, "1700003600", "new"});
        req += cmd({"ZREM", meta, "old"});
        req += extend_ttl(meta, "3600");
    }
    return req + cmd({"EXEC"});
}

string old_redis_replies(bool expire_old) {
    const int n = 1 + (expire_old ? 1 : 0) + 8;
    string exec = "*" + std::to_string(n) + "\r\n+OK\r\n";
    for (int i = 1; i < n; ++i) exec += ":1\r\n";
    return kOk + queued(n) + exec;
}

const string kTtlOld = cmd({"TTL", "pre:session:old"});

TEST(OperationSet, OldRedisTtlThenTransaction) {
    for (long version : {60200L, 0L, 69999L}) {
        SCOPED_TRACE(version);
        // TTL higher than stale_ttl: lowered with a plain EXPIRE.
        Result r = run(set_old_and_meta(), version,
                       {{kTtlOld, ":3000\r\n"}, {old_redis_main_request(true), old_redis_replies(true)}});
        EXPECT_KIND(r, Ok);
    }
}

TEST(OperationSet, OldRedisTtlNotHigherLeavesOldKeyAlone) {
    // Equal to stale_ttl, lower, no TTL (-1), missing key (-2): no EXPIRE of the old key.
    for (const char* ttl : {":10\r\n", ":5\r\n", ":-1\r\n", ":-2\r\n"}) {
        SCOPED_TRACE(ttl);
        Result r = run(set_old_and_meta(), 60200,
                       {{kTtlOld, ttl}, {old_redis_main_request(false), old_redis_replies(false)}});
        EXPECT_KIND(r, Ok);
    }
}

TEST(OperationSet, OldRedisOldKeyOnly) {
    Factory make = [] {
        SetArgs a = set_args();
        a.old_key = "old";
        return Operation::set(naming(), a);
    };
    const string req = cmd({"MULTI"}) + kSetNew + cmd({"EXPIRE", "pre:session:old", "10"}) + cmd({"EXEC"});
    EXPECT_KIND(run(make, 60200, {{kTtlOld, ":11\r\n"}, {req, kOk + queued(2) + "*2\r\n+OK\r\n:1\r\n"}}), Ok);
    const string req_no_expire = cmd({"MULTI"}) + kSetNew + cmd({"EXEC"});
    EXPECT_KIND(run(make, 60200, {{kTtlOld, ":-1\r\n"}, {req_no_expire, kOk + queued(1) + "*1\r\n+OK\r\n"}}), Ok);
}

TEST(OperationSet, OldRedisMetadataOnlyIsOneRoundTrip) {
    Factory make = [] {
        SetArgs a = set_args();
        Metadata m;
        m.entries = {{"aud", "sub"}};
        a.metadata = m;
        return Operation::set(naming(), a);
    };
    const string meta = "pre:session:aud:sub";
    const string req = cmd({"MULTI"}) + kSetNew + cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999"}) +
                       cmd({"ZADD", meta, "1700003600", "new"}) + extend_ttl(meta, "3600") + cmd({"EXEC"});
    EXPECT_KIND(run(make, 60200, {{req, kOk + queued(4) + "*4\r\n+OK\r\n:0\r\n:1\r\n:1\r\n"}}), Ok);
}

TEST(OperationSet, OldRedisTtlError) {
    Result r = run(set_old_and_meta(), 60200, {{kTtlOld, "-NOAUTH Authentication required.\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "NOAUTH Authentication required.");
}

TEST(OperationSet, OldRedisTtlNotAnInteger) {
    Result r = run(set_old_and_meta(), 60200, {{kTtlOld, "+OK\r\n"}});
    EXPECT_KIND(r, Error);
}

TEST(OperationSet, OldRedisErrorInSecondRound) {
    string exec = "*10\r\n+OK\r\n:1\r\n:1\r\n-WRONGTYPE bad\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n";
    Result r = run(set_old_and_meta(), 60200,
                   {{kTtlOld, ":3000\r\n"}, {old_redis_main_request(true), kOk + queued(10) + exec}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "WRONGTYPE bad");
}

TEST(OperationSet, BytesBetweenRoundsAreAProtocolError) {
    Operation op = set_old_and_meta()();
    ASSERT_TRUE(op.next_request(60200).has_value());
    EXPECT_TRUE(op.feed(":3000\r\n", 7));
    EXPECT_FALSE(op.finished());
    EXPECT_THROW(op.feed("+OK\r\n", 5), ProtocolError);
}

// ---------------------------------------------------------------- get

Factory get_op() {
    return [] {
        GetArgs a;
        a.name = "session";
        a.key = "abc";
        return Operation::get(naming(), a);
    };
}
const string kGet = cmd({"GET", "pre:session:abc"});

TEST(OperationGet, String) {
    Result r = run(get_op(), 70000, {{kGet, bulk("hello")}});
    EXPECT_KIND(r, String);
    EXPECT_EQ(r.text, "hello");
}

TEST(OperationGet, BinaryAndEmptyValues) {
    string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    Result r = run(get_op(), 70000, {{kGet, bulk(all)}});
    EXPECT_KIND(r, String);
    EXPECT_EQ(r.text, all);
    Result empty = run(get_op(), 70000, {{kGet, bulk("")}});
    EXPECT_KIND(empty, String);
    EXPECT_EQ(empty.text, "");
}

TEST(OperationGet, Nil) { EXPECT_KIND(run(get_op(), 70000, {{kGet, "$-1\r\n"}}), Nil); }

TEST(OperationGet, Error) {
    Result r = run(get_op(), 70000, {{kGet, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "WRONGTYPE Operation against a key holding the wrong kind of value");
}

TEST(OperationGet, UnexpectedType) { EXPECT_KIND(run(get_op(), 70000, {{kGet, ":1\r\n"}}), Error); }

// ---------------------------------------------------------------- read_metadata

Factory read_op() {
    return [] {
        ReadMetadataArgs a;
        a.name = "session";
        a.audience = "aud";
        a.subject = "sub";
        a.current_time = 1700000000;
        return Operation::read_metadata(naming(), a);
    };
}
const string kRead = cmd({"ZRANGEBYSCORE", "pre:session:aud:sub", "1700000000", "+inf", "WITHSCORES"});

TEST(OperationReadMetadata, MapWithStringScores) {
    const string reply = "*4\r\n" + bulk("k1") + bulk("1700003600") + bulk("k2") + bulk("1795665137") ;
    Result r = run(read_op(), 70000, {{kRead, reply}});
    EXPECT_KIND(r, Map);
    using Map = std::vector<std::pair<string, string>>;
    EXPECT_EQ(r.map, (Map{{"k1", "1700003600"}, {"k2", "1795665137"}}));
}

TEST(OperationReadMetadata, SameCommandOnEveryVersion) {
    for (long version : {0L, 60000L, 60200L, 70000L}) {
        Result r = run(read_op(), version, {{kRead, "*0\r\n"}});
        EXPECT_KIND(r, Map);
        EXPECT_TRUE(r.map.empty());
    }
}

TEST(OperationReadMetadata, Errors) {
    Result r = run(read_op(), 70000, {{kRead, "-WRONGTYPE nope\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "WRONGTYPE nope");
    EXPECT_KIND(run(read_op(), 70000, {{kRead, "*1\r\n" + bulk("k1")}}), Error);  // odd count
    EXPECT_KIND(run(read_op(), 70000, {{kRead, "$-1\r\n"}}), Error);
}

// One operation reused, as the drivers reuse theirs: each call's map is exactly
// its own reply's pairs (the pairs kept from a larger one are dropped), across a
// get and an error in between.
TEST(OperationReadMetadata, ReusedOperationGivesEachCallItsOwnMap) {
    using Map = std::vector<std::pair<string, string>>;
    const rsh::KeyNaming keys = naming();
    Operation op;
    auto read = [&](const string& reply) -> const Result& {
        auto& a = op.start_read_metadata(keys);
        a.name = "session";
        a.audience = "aud";
        a.subject = "sub";
        a.current_time = 1700000000;
        EXPECT_TRUE(op.next_request(70000).has_value());
        EXPECT_TRUE(op.feed(reply.data(), reply.size()));
        return op.result();
    };
    const string k1(43, '1'), k2(43, '2'), k3(43, '3');
    EXPECT_EQ(read("*6\r\n" + bulk(k1) + bulk("10") + bulk(k2) + bulk("20") + bulk(k3) + bulk("30")).map,
              (Map{{k1, "10"}, {k2, "20"}, {k3, "30"}}));
    EXPECT_EQ(read("*2\r\n" + bulk(k2) + bulk("21")).map, (Map{{k2, "21"}}));
    EXPECT_KIND(read("*2\r\n" + bulk(k1) + ":5\r\n"), Error);  // a score that is no string
    auto& get = op.start_get(keys);
    get.name = "session";
    get.key = "k";
    ASSERT_TRUE(op.next_request(70000).has_value());
    ASSERT_TRUE(op.feed("$-1\r\n", 5));
    EXPECT_KIND(op.result(), Nil);
    const Result& empty = read("*0\r\n");
    EXPECT_KIND(empty, Map);
    EXPECT_TRUE(empty.map.empty());
    EXPECT_EQ(read("*4\r\n" + bulk(k3) + bulk("31") + bulk(k1) + bulk("11")).map, (Map{{k3, "31"}, {k1, "11"}}));
}

// ------------------------------------------------- durability (WAIT)

rsh::Durability wait_for(int replicas, long long timeout_ms) {
    rsh::Durability d;
    d.replicas = replicas;
    d.timeout_ms = timeout_ms;
    return d;
}

Factory durable(Factory make, int replicas, long long timeout_ms) {
    return [=] {
        Operation op = make();
        op.set_durability(wait_for(replicas, timeout_ms));
        return op;
    };
}

const string kWait1 = cmd({"WAIT", "1", "250"});

TEST(OperationDurability, PlainSetEndsWithWaitInTheSameRoundTrip) {
    Factory make = durable([] { return Operation::set(naming(), set_args()); }, 1, 250);
    EXPECT_KIND(run(make, 70000, {{kSetNew + kWait1, kOk + ":1\r\n"}}), Ok);
    EXPECT_KIND(run(make, 70000, {{kSetNew + kWait1, kOk + ":2\r\n"}}), Ok);
}

TEST(OperationDurability, ShortfallIsAnErrorNamingIt) {
    Factory make = durable([] { return Operation::set(naming(), set_args()); }, 2, 250);
    Result r = run(make, 70000, {{kSetNew + cmd({"WAIT", "2", "250"}), kOk + ":1\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "write not durable: 1 of 2 replicas (wait_replicas) acknowledged it within 250 ms (wait_timeout)");
}

TEST(OperationDurability, WaitErrorReplyIsTheError) {
    Factory make = durable([] { return Operation::set(naming(), set_args()); }, 1, 250);
    Result r = run(make, 70000, {{kSetNew + kWait1, kOk + "-ERR WAIT cannot be used with replica instances.\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "ERR WAIT cannot be used with replica instances.");
}

TEST(OperationDurability, WriteErrorWinsOverWait) {
    Factory make = durable([] { return Operation::set(naming(), set_args()); }, 1, 250);
    Result r = run(make, 70000, {{kSetNew + kWait1, "-READONLY You can't write against a read only replica.\r\n:0\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "READONLY You can't write against a read only replica.");
}

TEST(OperationDurability, TransactionThenWait) {
    Factory make = durable(set_old_and_meta(), 1, 250);
    const string replies = kOk + queued(kOldMetaCommands) + old_meta_exec_ok();
    EXPECT_KIND(run(make, 70000, {{redis7_old_and_meta_request() + kWait1, replies + ":1\r\n"}}), Ok);
    Result r = run(make, 70000, {{redis7_old_and_meta_request() + kWait1, replies + ":0\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "write not durable: 0 of 1 replicas (wait_replicas) acknowledged it within 250 ms (wait_timeout)");
    // an aborted transaction stays what it was
    r = run(make, 70000, {{redis7_old_and_meta_request() + kWait1, kOk + queued(kOldMetaCommands) + "*-1\r\n:1\r\n"}});
    EXPECT_EQ(r.text, "transaction aborted");
}

TEST(OperationDurability, OldRedisWaitsOnlyInTheWriteRound) {
    Factory make = durable(set_old_and_meta(), 1, 250);
    Result r = run(make, 60200, {{kTtlOld, ":3000\r\n"},
                                 {old_redis_main_request(true) + kWait1, old_redis_replies(true) + ":1\r\n"}});
    EXPECT_KIND(r, Ok);
}

TEST(OperationDurability, DeletesWaitReadsDoNot) {
    Factory del = durable([] {
        DeleteArgs a;
        a.name = "session";
        a.key = "abc";
        return Operation::remove(naming(), a);
    }, 1, 250);
    EXPECT_KIND(run(del, 70000, {{cmd({"UNLINK", "pre:session:abc"}) + kWait1, ":1\r\n:1\r\n"}}), Ok);
    Factory get = durable([] {
        GetArgs a;
        a.name = "session";
        a.key = "abc";
        return Operation::get(naming(), a);
    }, 1, 250);
    EXPECT_KIND(run(get, 70000, {{cmd({"GET", "pre:session:abc"}), "$-1\r\n"}}), Nil);
    Factory read = durable([] {
        ReadMetadataArgs a;
        a.name = "session";
        a.audience = "aud";
        a.subject = "sub";
        a.current_time = 5;
        return Operation::read_metadata(naming(), a);
    }, 1, 250);
    EXPECT_KIND(run(read, 70000, {{cmd({"ZRANGEBYSCORE", "pre:session:aud:sub", "5", "+inf", "WITHSCORES"}), "*0\r\n"}}), Map);
}

// ---------------------------------------------------------------- delete

TEST(OperationDelete, Plain) {
    Factory make = [] {
        DeleteArgs a;
        a.name = "session";
        a.key = "abc";
        a.current_time = 1700000000;
        return Operation::remove(naming(), a);
    };
    const string req = cmd({"UNLINK", "pre:session:abc"});
    EXPECT_KIND(run(make, 70000, {{req, ":1\r\n"}}), Ok);
    EXPECT_KIND(run(make, 0, {{req, ":0\r\n"}}), Ok);
    Result r = run(make, 70000, {{req, "-NOAUTH Authentication required.\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "NOAUTH Authentication required.");
}

TEST(OperationDelete, TransactionWithMetadata) {
    Factory make = [] {
        DeleteArgs a;
        a.name = "session";
        a.key = "abc";
        a.current_time = 1700000000;
        a.metadata = two_entries();
        return Operation::remove(naming(), a);
    };
    string req = cmd({"MULTI"}) + cmd({"UNLINK", "pre:session:abc"});
    for (const auto& [aud, sub] : two_entries().entries) {
        const string meta = "pre:session:" + aud + ":" + sub;
        req += cmd({"ZREMRANGEBYSCORE", meta, "0", "1699999999"});
        req += cmd({"ZREM", meta, "abc"});
    }
    req += cmd({"EXEC"});
    for (long version : {70000L, 60200L}) {
        EXPECT_KIND(run(make, version, {{req, kOk + queued(5) + "*5\r\n:1\r\n:0\r\n:1\r\n:0\r\n:1\r\n"}}), Ok);
    }
    Result r = run(make, 70000, {{req, kOk + queued(5) + "*5\r\n:1\r\n:0\r\n-WRONGTYPE x\r\n:0\r\n:1\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "WRONGTYPE x");
    EXPECT_EQ(run(make, 70000, {{req, kOk + queued(5) + "*-1\r\n"}}).text, "transaction aborted");
}

// ---------------------------------------------------------------- handshake

const string kHello7 =
    "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n"
    "$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

HandshakeArgs full_handshake() {
    HandshakeArgs a;
    a.username = "alice";
    a.password = "s3cret";
    a.database = 2;
    return a;
}

TEST(OperationHandshake, NothingToSend) {
    HandshakeArgs a;
    a.hello = false;
    EXPECT_FALSE(Operation::handshake(a).has_value());
}

TEST(OperationHandshake, AuthWithUserSelectHello) {
    Factory make = [] { return *Operation::handshake(full_handshake()); };
    const string req = cmd({"AUTH", "alice", "s3cret"}) + cmd({"SELECT", "2"}) + cmd({"HELLO", "2"});
    Result r = run(make, 0, {{req, kOk + kOk + kHello7}});
    EXPECT_KIND(r, Version);
    EXPECT_EQ(r.version, 70015);
}

TEST(OperationHandshake, AuthWithoutUser) {
    Factory make = [] {
        HandshakeArgs a;
        a.password = "pw";
        a.hello = false;
        return *Operation::handshake(a);
    };
    Result r = run(make, 0, {{cmd({"AUTH", "pw"}), kOk}});
    EXPECT_KIND(r, Version);
    EXPECT_EQ(r.version, 0);
}

TEST(OperationHandshake, HelloOnly) {
    Factory make = [] { return *Operation::handshake(HandshakeArgs{}); };
    const string hello62 = "*14\r\n" + bulk("server") + bulk("redis") + bulk("version") + bulk("6.2.14") +
                           bulk("proto") + ":2\r\n" + bulk("id") + ":3\r\n" + bulk("mode") + bulk("standalone") +
                           bulk("role") + bulk("master") + bulk("modules") + "*0\r\n";
    Result r = run(make, 0, {{cmd({"HELLO", "2"}), hello62}});
    EXPECT_KIND(r, Version);
    EXPECT_EQ(r.version, 60214);
}

TEST(OperationHandshake, HelloErrorMeansUnknownVersion) {
    Factory make = [] { return *Operation::handshake(full_handshake()); };
    const string req = cmd({"AUTH", "alice", "s3cret"}) + cmd({"SELECT", "2"}) + cmd({"HELLO", "2"});
    Result r = run(make, 0, {{req, kOk + kOk + "-ERR unknown command 'HELLO'\r\n"}});
    EXPECT_KIND(r, Version);
    EXPECT_EQ(r.version, 0);
}

TEST(OperationHandshake, AuthErrorCarriesRedisText) {
    Factory make = [] { return *Operation::handshake(full_handshake()); };
    const string req = cmd({"AUTH", "alice", "s3cret"}) + cmd({"SELECT", "2"}) + cmd({"HELLO", "2"});
    const string wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
    Result r = run(make, 0, {{req, "-" + wrongpass + "\r\n-NOAUTH Authentication required.\r\n"
                                    "-NOAUTH Authentication required.\r\n"}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, wrongpass);
    EXPECT_EQ(r.text.find("s3cret"), string::npos);
}

TEST(OperationHandshake, SelectError) {
    Factory make = [] { return *Operation::handshake(full_handshake()); };
    const string req = cmd({"AUTH", "alice", "s3cret"}) + cmd({"SELECT", "2"}) + cmd({"HELLO", "2"});
    Result r = run(make, 0, {{req, kOk + "-ERR DB index is out of range\r\n" + kHello7}});
    EXPECT_KIND(r, Error);
    EXPECT_EQ(r.text, "ERR DB index is out of range");
}

// ---------------------------------------------------------------- restart, bytes, protocol errors

TEST(Operation, RestartReplaysFromTheStart) {
    Operation op = set_old_and_meta()();
    const std::optional<std::string_view> first = op.next_request(60200);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(*first, kTtlOld);
    EXPECT_FALSE(op.received_bytes());
    EXPECT_FALSE(op.feed(":30", 3));
    EXPECT_TRUE(op.received_bytes());
    op.restart();
    EXPECT_FALSE(op.received_bytes());
    EXPECT_FALSE(op.finished());
    // A fresh connection may be a newer server: the version is picked again.
    const std::optional<std::string_view> again = op.next_request(70000);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, redis7_old_and_meta_request());
    const string replies = kOk + queued(kOldMetaCommands) + old_meta_exec_ok();
    EXPECT_TRUE(op.feed(replies.data(), replies.size()));
    EXPECT_TRUE(op.finished());
    EXPECT_KIND(op.result(), Ok);
}

TEST(Operation, RestartAfterFinish) {
    Operation op = get_op()();
    ASSERT_TRUE(op.next_request(70000).has_value());
    const string reply = bulk("x");
    EXPECT_TRUE(op.feed(reply.data(), reply.size()));
    EXPECT_KIND(op.result(), String);
    op.restart();
    EXPECT_FALSE(op.finished());
    EXPECT_KIND(op.result(), Ok);  // reset
    EXPECT_EQ(op.next_request(70000).value_or(""), kGet);
    EXPECT_TRUE(op.feed("$-1\r\n", 5));
    EXPECT_KIND(op.result(), Nil);
}

TEST(Operation, ReceivedBytesAfterFirstByte) {
    Operation op = get_op()();
    ASSERT_TRUE(op.next_request(70000).has_value());
    EXPECT_FALSE(op.received_bytes());
    EXPECT_FALSE(op.feed("$", 1));
    EXPECT_TRUE(op.received_bytes());
}

// The next call's old_key and metadata come in the buffers of the call before
// (emplace_old_key, emplace_metadata), unless that call's were large: trim()
// frees an old_key past kKeep and metadata past kKeepMapPairs entries.
TEST(Operation, OldKeyAndMetadataBuffersAreKeptUnlessLarge) {
    Operation op;
    KeyNaming naming;
    op.start_set(naming);
    op.emplace_old_key().assign(43, 'o');
    op.emplace_metadata(2).entries[1].second.assign(40, 's');
    op.trim();
    op.start_set(naming);
    EXPECT_FALSE(op.set_args()->old_key.has_value());
    EXPECT_FALSE(op.set_args()->metadata.has_value());
    std::string& old_key = op.emplace_old_key();
    EXPECT_TRUE(old_key.empty());
    EXPECT_GE(old_key.capacity(), 43u);  // the last call's buffer
    Metadata& metadata = op.emplace_metadata(2);
    EXPECT_GE(metadata.entries[1].second.capacity(), 40u);
    ASSERT_EQ(op.set_args()->metadata->entries.size(), 2u);

    op.emplace_old_key().assign(Operation::kKeep * 4, 'o');
    op.emplace_metadata(rsh::kKeepMapPairs * 2);
    op.trim();
    op.start_set(naming);
    EXPECT_LE(op.emplace_old_key().capacity(), Operation::kKeep);
    EXPECT_LE(op.emplace_metadata(1).entries.capacity(), rsh::kKeepMapPairs);

    // a delete's metadata takes the same buffers
    op.start_delete(naming);
    EXPECT_FALSE(op.delete_args()->metadata.has_value());
    op.emplace_metadata(1).entries[0].first.assign("web");
    ASSERT_TRUE(op.delete_args()->metadata.has_value());
    EXPECT_EQ(op.delete_args()->metadata->entries[0].first, "web");
    EXPECT_FALSE(op.set_args());
}

// A reused operation keeps no large call's memory: trim() frees the value, the
// request and the result past kKeep, and the operation serves the next call.
TEST(Operation, TrimFreesALargeCall) {
    const string big(Operation::kKeep * 4, 'v');
    Operation op;
    KeyNaming naming;
    SetArgs& set = op.start_set(naming);
    set.name = "s";
    set.key = "k";
    set.value = big;
    set.ttl = 60;
    ASSERT_TRUE(op.next_request(70000).has_value());
    ASSERT_TRUE(op.feed(kOk.data(), kOk.size()));
    op.trim();
    EXPECT_LE(op.set_args()->value.capacity(), Operation::kKeep);

    GetArgs& get = op.start_get(naming);
    get.name = "s";
    get.key = "k";
    ASSERT_TRUE(op.next_request(70000).has_value());
    const string wire = bulk(big);
    for (std::size_t at = 0; at < wire.size(); at += 16384) {
        op.feed(wire.data() + at, std::min<std::size_t>(16384, wire.size() - at));
    }
    ASSERT_TRUE(op.finished());
    EXPECT_EQ(op.result().text, big);
    op.trim();
    EXPECT_LE(op.result().text.capacity(), Operation::kKeep);

    GetArgs& again = op.start_get(naming);
    again.name = "s";
    again.key = "k";
    ASSERT_TRUE(op.next_request(70000).has_value());
    ASSERT_TRUE(op.feed("$2\r\nok\r\n", 8));
    EXPECT_EQ(op.result().text, "ok");
}

TEST(Operation, FeedBeforeRequestIsAProtocolError) {
    Operation op = get_op()();
    EXPECT_THROW(op.feed("+OK\r\n", 5), ProtocolError);
}

TEST(Operation, BytesBeyondTheRepliesInOneFeed) {
    Operation op = get_op()();
    ASSERT_TRUE(op.next_request(70000).has_value());
    const string wire = bulk("x") + "+OK\r\n";
    EXPECT_THROW(op.feed(wire.data(), wire.size()), ProtocolError);
}

TEST(Operation, PartialExtraReplyIsAProtocolError) {
    Operation op = set_old_and_meta()();
    ASSERT_TRUE(op.next_request(70000).has_value());
    const string wire = kOk + queued(kOldMetaCommands) + old_meta_exec_ok() + "$5\r\nhe";
    EXPECT_THROW(op.feed(wire.data(), wire.size()), ProtocolError);
}

TEST(Operation, MalformedReplyIsAProtocolError) {
    Operation op = get_op()();
    ASSERT_TRUE(op.next_request(70000).has_value());
    EXPECT_THROW(op.feed("!bad\r\n", 6), ProtocolError);
}

// Found by fuzz_operation: the cosocket driver reuses one operation for every
// call. A call abandoned inside a reply (a timeout after an array header, which
// hiredis consumes) must not leave that half reply to swallow the next call's.
TEST(Operation, ReusedAfterAReplyCutShortParsesTheNextCallAlone) {
    Operation op;
    KeyNaming naming;
    GetArgs& first = op.start_get(naming);
    first.name = "s";
    first.key = "a";
    ASSERT_TRUE(op.next_request(70000).has_value());
    EXPECT_FALSE(op.feed("*2\r\n:1\r\n", 8));  // then the connection timed out and was closed

    GetArgs& second = op.start_get(naming);
    second.name = "s";
    second.key = "b";
    ASSERT_TRUE(op.next_request(70000).has_value());
    const string wire = bulk("v");
    EXPECT_TRUE(op.feed(wire.data(), wire.size()));
    ASSERT_TRUE(op.finished());
    EXPECT_EQ(op.result().kind, Result::Kind::String);
    EXPECT_EQ(op.result().text, "v");
}

TEST(Operation, ReusedAfterABulkCutShort) {
    Operation op;
    KeyNaming naming;
    GetArgs& first = op.start_get(naming);
    first.name = "s";
    first.key = "a";
    ASSERT_TRUE(op.next_request(70000).has_value());
    EXPECT_FALSE(op.feed("$10\r\nabc", 8));

    GetArgs& second = op.start_get(naming);
    second.name = "s";
    second.key = "b";
    ASSERT_TRUE(op.next_request(70000).has_value());
    EXPECT_TRUE(op.feed("$-1\r\n", 5));
    EXPECT_EQ(op.result().kind, Result::Kind::Nil);
}

TEST(ParseRedisVersion, Forms) {
    EXPECT_EQ(rsh::parse_redis_version("7.0.15"), 70015);
    EXPECT_EQ(rsh::parse_redis_version("6.2.14"), 60214);
    EXPECT_EQ(rsh::parse_redis_version("6.0.9"), 60009);
    EXPECT_EQ(rsh::parse_redis_version("7.2"), 70200);
    EXPECT_EQ(rsh::parse_redis_version("7"), 70000);
    EXPECT_EQ(rsh::parse_redis_version("255.255.255"), 2575755);
    EXPECT_EQ(rsh::parse_redis_version("7.4.0-rc1"), 70400);
    EXPECT_EQ(rsh::parse_redis_version(""), 0);
    EXPECT_EQ(rsh::parse_redis_version("unknown"), 0);
    EXPECT_GE(rsh::parse_redis_version("7.0.0"), rsh::kRedis7);
    EXPECT_LT(rsh::parse_redis_version("6.2.99"), rsh::kRedis7);
}

}  // namespace
