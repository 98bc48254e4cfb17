// Steady-state calls allocate nothing on the C++ heap: a reused Operation keeps
// its buffers, the RESP encoder formats without allocating, and replies come
// from the thread's spare replies; a reused ClusterOperation recycles its groups,
// parts and node batches. Counted by replacing the global operator new.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cluster_operation.hpp"
#include "operation.hpp"
#include "resp.hpp"
#include "sentinel.hpp"
#include "slots.hpp"
#include "stats.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};

void* counted(std::size_t size) {
    if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return counted(size); }
void* operator new[](std::size_t size) { return counted(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    try {
        return counted(size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using rsh::KeyNaming;
using rsh::Operation;
using rsh::Result;
using std::string;

const string kKey(43, 'k');  // lua-resty-session's key length
const string kValue(512, 'v');

string bulk(const string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

// Runs `call` 50 times to warm up, then counts the allocations of 200 more.
template <class Call>
long allocations_per_call_after_warm_up(Call&& call) {
    for (int i = 0; i < 50; ++i) call();
    g_allocations = 0;
    g_counting = true;
    for (int i = 0; i < 200; ++i) call();
    g_counting = false;
    return g_allocations.load();
}

// A worker's pipelines hold hundreds of replies at once (32 calls of a set with
// metadata: about 800, until each caller reads its own): they come back from the
// spares once dropped.
TEST(SteadyState, RepliesHeldTogetherComeFromTheSpares) {
    string wire = "*1000\r\n";
    for (int i = 0; i < 1000; ++i) wire += bulk("ok");
    rsh::ReplyReader reader;
    const long n = allocations_per_call_after_warm_up([&] {
        reader.feed(wire.data(), wire.size());
        rsh::ReplyPtr reply = reader.next();
        ASSERT_TRUE(reply);
        ASSERT_EQ(reply->elements.size(), 1000u);
    });
    EXPECT_EQ(n, 0);
}

TEST(SteadyState, GetAllocatesNothing) {
    KeyNaming naming;
    naming.prefix = "sessions";
    Operation op;
    const string reply = bulk(kValue);
    const long n = allocations_per_call_after_warm_up([&] {
        auto& args = op.start_get(naming);
        args.name.assign("session");
        args.key.assign(kKey);
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed(reply.data(), reply.size()));
        ASSERT_EQ(op.result().kind, Result::Kind::String);
        ASSERT_EQ(op.result().text.size(), kValue.size());
        op.trim();
    });
    EXPECT_EQ(n, 0);
}

TEST(SteadyState, MissingGetAndPlainSetAndDeleteAllocateNothing) {
    KeyNaming naming;
    Operation op;
    const long n = allocations_per_call_after_warm_up([&] {
        auto& get = op.start_get(naming);
        get.name.assign("session");
        get.key.assign(kKey);
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed("$-1\r\n", 5));
        ASSERT_EQ(op.result().kind, Result::Kind::Nil);

        auto& set = op.start_set(naming);
        set.name.assign("session");
        set.key.assign(kKey);
        set.value.assign(kValue);
        set.ttl = 3600;
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed("+OK\r\n", 5));
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);

        auto& del = op.start_delete(naming);
        del.name.assign("session");
        del.key.assign(kKey);
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed(":1\r\n", 4));
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);
    });
    EXPECT_EQ(n, 0);
}

TEST(SteadyState, DurableSetAndDeleteAllocateNothing) {
    KeyNaming naming;
    Operation op;
    rsh::Durability durability;
    durability.replicas = 1;
    durability.timeout_ms = 1000;
    op.set_durability(durability);
    const long n = allocations_per_call_after_warm_up([&] {
        auto& set = op.start_set(naming);
        set.name.assign("session");
        set.key.assign(kKey);
        set.value.assign(kValue);
        set.ttl = 3600;
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed("+OK\r\n:1\r\n", 9));
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);

        auto& del = op.start_delete(naming);
        del.name.assign("session");
        del.key.assign(kKey);
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed(":1\r\n:1\r\n", 8));
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);
    });
    EXPECT_EQ(n, 0);
}

// A slot map whose masters (127.0.0.1:7000, 7001, ...) own the given slot ranges.
std::shared_ptr<rsh::ClusterTopology> masters_owning(std::initializer_list<std::pair<int, int>> ranges) {
    auto topology = std::make_shared<rsh::ClusterTopology>();
    rsh::SlotMap map;
    int port = 7000;
    for (const auto& [first, last] : ranges) map.assign(first, last, rsh::NodeAddress{"127.0.0.1", port++});
    topology->replace(map);
    return topology;
}

// A cluster get and a plain cluster set, each to one node, as the drivers run
// them: the call's ClusterOperation and the node's raw round trip, both reused.
TEST(SteadyState, ClusterGetAndPlainSetAllocateNothing) {
    KeyNaming naming;
    naming.prefix = "sessions";
    auto topology = masters_owning({{0, 16383}});
    Operation loaded;
    Operation round_trip;
    rsh::ClusterOperation call;
    const string value_reply = bulk(kValue);
    // one round to one node: load the batch, feed the node's reply, finish
    auto run = [&](const string& reply) {
        call.start(loaded, naming, topology, {});
        ASSERT_TRUE(call.plan_round());
        ASSERT_EQ(call.batches().size(), 1u);
        round_trip.start_raw(call.batches().front().commands);
        ASSERT_TRUE(round_trip.next_request(0).has_value());
        ASSERT_TRUE(round_trip.feed(reply.data(), reply.size()));
        call.node_replies(0, round_trip.raw_replies());
        round_trip.trim();
        ASSERT_TRUE(call.end_round().finished);
    };
    const long n = allocations_per_call_after_warm_up([&] {
        auto& get = loaded.start_get(naming);
        get.name.assign("session");
        get.key.assign(kKey);
        run(value_reply);
        ASSERT_EQ(call.result().kind, Result::Kind::String);
        ASSERT_EQ(call.result().text.size(), kValue.size());
        call.trim();

        auto& set = loaded.start_set(naming);
        set.name.assign("session");
        set.key.assign(kKey);
        set.value.assign(kValue);
        set.ttl = 3600;
        run("+OK\r\n");
        ASSERT_EQ(call.result().kind, Result::Kind::Ok);
        call.trim();
    });
    EXPECT_EQ(n, 0);
}

// read_metadata fills its result's map in place: the pairs' buffers of the last
// call are reused (two 43-byte keys, past the short-string buffer).
TEST(SteadyState, ReadMetadataAllocatesNothing) {
    KeyNaming naming;
    Operation op;
    const string reply = "*4\r\n" + bulk(kKey) + bulk("4600") + bulk(string(43, 'j')) + bulk("4700");
    const long n = allocations_per_call_after_warm_up([&] {
        auto& read = op.start_read_metadata(naming);
        read.name.assign("session");
        read.audience.assign("web");
        read.subject.assign("alice");
        read.current_time = 1000;
        ASSERT_TRUE(op.next_request(70000).has_value());
        ASSERT_TRUE(op.feed(reply.data(), reply.size()));
        ASSERT_EQ(op.result().kind, Result::Kind::Map);
        ASSERT_EQ(op.result().map.size(), 2u);
        ASSERT_EQ(op.result().map[1].second, "4700");
        op.trim();
    });
    EXPECT_EQ(n, 0);
}

// Runs f with the counter off: the test's own work (a server's answers).
template <class F>
void uncounted(F&& f) {
    const bool was = g_counting.exchange(false);
    f();
    g_counting = was;
}

// The metadata as the Lua binding loads it (Operation::emplace_metadata, then each
// string assigned): audiences and subjects past the short-string buffer.
const string kAudience(20, 'a');
const string kSubject(24, 's');
void load_metadata(Operation& op) {
    auto& metadata = op.emplace_metadata(2);
    metadata.entries[0].first.assign(kAudience);
    metadata.entries[0].second.assign(kSubject);
    metadata.entries[1].first.assign(kAudience.size(), 'b');
    metadata.entries[1].second.assign(kSubject.size(), 't');
}

// A set + old_key (43 bytes) + 2 metadata pairs, loaded as the binding does.
void load_set_with_old_key_and_metadata(Operation& op, const KeyNaming& naming) {
    auto& set = op.start_set(naming);
    set.name.assign("session");
    set.key.assign(kKey);
    set.value.assign(kValue);
    set.ttl = 3600;
    set.current_time = 1000;
    set.stale_ttl = 10;
    op.emplace_old_key().assign(kKey.size(), 'o');
    load_metadata(op);
}

// What a master answers to a batch's commands (those a session call sends):
// +QUEUED inside MULTI, and EXEC's array of the queued commands' replies.
string master_answer(const string& commands) {
    rsh::ReplyReader reader;
    reader.feed(commands.data(), commands.size());
    string out, queued;
    int queued_count = 0;
    bool in_multi = false;
    while (auto command = reader.next()) {
        string name = command->elements.at(0)->str;
        for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (name == "MULTI") {
            out += "+OK\r\n";
            in_multi = true;
            continue;
        }
        if (name == "EXEC") {
            out += "*" + std::to_string(queued_count) + "\r\n" + queued;
            queued.clear();
            queued_count = 0;
            in_multi = false;
            continue;
        }
        string reply = ":1\r\n";
        if (name == "SET" || name == "PING") reply = "+OK\r\n";
        if (name.rfind("ZRANGE", 0) == 0) reply = "*4\r\n" + bulk(kKey) + bulk("4600") + bulk(kKey) + bulk("4700");
        if (in_multi) {
            out += "+QUEUED\r\n";
            queued += reply;
            ++queued_count;
        } else {
            out += reply;
        }
    }
    return out;
}

// A set with old_key and 2 metadata pairs, and a delete with them, on one node,
// loaded as the Lua binding loads them (a 43-byte old_key, long metadata strings):
// the strings go in the buffers of the call before.
TEST(SteadyState, SetAndDeleteWithOldKeyAndMetadataAllocateNothing) {
    KeyNaming naming;
    naming.prefix = "sessions";
    Operation op;
    std::vector<string> set_answers, delete_answers;  // per round trip (the same each time)
    auto run = [&](std::vector<string>& answers) {
        for (std::size_t i = 0;; ++i) {
            const auto request = op.next_request(70000);
            if (!request) break;
            if (answers.size() <= i) uncounted([&] { answers.push_back(master_answer(string(*request))); });
            ASSERT_TRUE(op.feed(answers[i].data(), answers[i].size()));
        }
    };
    const long n = allocations_per_call_after_warm_up([&] {
        load_set_with_old_key_and_metadata(op, naming);
        run(set_answers);
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);
        op.trim();

        auto& del = op.start_delete(naming);
        del.name.assign("session");
        del.key.assign(kKey);
        del.current_time = 1000;
        load_metadata(op);
        run(delete_answers);
        ASSERT_EQ(op.result().kind, Result::Kind::Ok);
        op.trim();
    });
    EXPECT_EQ(n, 0);
}

// A cluster set + old_key + 2 metadata over three masters (two phases, a batch per
// node) and a cluster read_metadata, as the drivers run them: the call's
// ClusterOperation and one reused round trip per batch. The masters' answers are
// made during the warm-up, per round and batch (the same call plans the same batches).
// Only the call is counted: its phases, batches, replies and result.
TEST(SteadyState, ClusterSetWithMetadataAndReadMetadataAllocateNothing) {
    KeyNaming naming;
    naming.prefix = "sessions";
    auto topology = masters_owning({{0, 5460}, {5461, 10922}, {10923, 16383}});
    Operation loaded;
    std::vector<Operation> round_trips(3);
    rsh::ClusterOperation call;
    std::vector<std::vector<string>> answers;  // [round][batch]
    std::size_t most_batches = 0;
    auto run = [&](std::size_t first_round) {
        call.start(loaded, naming, topology, {});
        for (std::size_t round = first_round;; ++round) {
            ASSERT_TRUE(call.plan_round());
            auto& batches = call.batches();
            ASSERT_LE(batches.size(), round_trips.size());
            most_batches = std::max(most_batches, batches.size());
            if (answers.size() <= round) answers.emplace_back();
            for (std::size_t i = 0; i < batches.size(); ++i) {
                if (answers[round].size() <= i) answers[round].push_back(master_answer(batches[i].commands.bytes()));
                auto& trip = round_trips[i];
                trip.start_raw(batches[i].commands);
                ASSERT_TRUE(trip.next_request(0).has_value());
                const string& reply = answers[round][i];
                ASSERT_TRUE(trip.feed(reply.data(), reply.size()));
                call.node_replies(i, trip.raw_replies());
                trip.trim();
            }
            if (call.end_round().finished) break;
        }
    };
    const long n = allocations_per_call_after_warm_up([&] {
        load_set_with_old_key_and_metadata(loaded, naming);
        run(0);
        ASSERT_EQ(call.result().kind, Result::Kind::Ok);
        ASSERT_EQ(call.phase_count(), 2);
        call.trim();

        auto& read = loaded.start_read_metadata(naming);
        read.name.assign("session");
        read.audience.assign("web");
        read.subject.assign("alice");
        read.current_time = 1000;
        run(2);
        ASSERT_EQ(call.result().kind, Result::Kind::Map);
        ASSERT_EQ(call.result().map.size(), 2u);
        call.trim();
    });
    EXPECT_GE(most_batches, 2u) << "the set's rounds reach several masters";
    EXPECT_EQ(n, 0);
}

// Counting a call (stats: the meter, the histogram, an error's class) allocates nothing.
// A cosocket sentinel lookup reuses its round (the driver's recycler): three
// sentinels asked and answered (the pooled SENTINEL MASTER, read in place) and the
// answer chosen allocate nothing. (An address over 15 characters would: its strings.)
TEST(SteadyState, ReusedSentinelLookupAllocatesNothing) {
    using rsh::SentinelQuery;
    string reply = "*20\r\n";
    for (const char* field : {"name", "mymaster", "ip", "127.0.0.1", "port", "6380", "runid",
                              "cb4786117a683771c459a89fe2490a99fef19c11", "flags", "master", "link-pending-commands",
                              "0", "last-ping-sent", "0", "role-reported", "master", "config-epoch", "7", "quorum",
                              "2"}) {
        reply += bulk(field);
    }
    rsh::SentinelRound round(SentinelQuery::Ask::Master, "mymaster", 0);
    const std::optional<string> none;
    const long n = allocations_per_call_after_warm_up([&] {
        round.reset(SentinelQuery::Ask::Master, "mymaster", 0);
        for (int i = 0; i < 3; ++i) round.add(false);
        for (std::size_t i = 0; i < 3; ++i) {
            round.prepare(i, none, none, false);
            ASSERT_TRUE(round.feed(i, reply.data(), reply.size()));
        }
        const rsh::SentinelChoice choice = round.choose();
        ASSERT_EQ(choice.kind, rsh::SentinelChoice::Kind::Master);
        ASSERT_EQ(choice.address.port, 6380);
    });
    EXPECT_EQ(n, 0);
}

TEST(SteadyState, CountingCallsAllocatesNothing) {
    rsh::stats::enabled = true;
    const string err = "WRONGTYPE Operation against a key holding the wrong kind of value";
    const long n = allocations_per_call_after_warm_up([&] {
        rsh::stats::CallMeter meter;
        meter.start(1);
        meter.succeed();
        meter.start(0);
        meter.fail(err);
        meter.start(2);
        meter.fail("connection refused");
    });
    EXPECT_EQ(n, 0);
    EXPECT_GE(rsh::stats::methods[1].calls.load(), 200u);
}

// The counter itself works: a fresh operation does allocate.
TEST(SteadyState, CounterSeesAllocations) {
    g_allocations = 0;
    g_counting = true;
    { auto* op = new Operation; delete op; }
    g_counting = false;
    EXPECT_GT(g_allocations.load(), 0);
}

}  // namespace
