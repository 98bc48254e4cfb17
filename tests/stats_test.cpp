// The core's call counters (src/stats.hpp): buckets, error classes, the meter.
#include <gtest/gtest.h>

#include <string_view>

#include "stats.hpp"

namespace rsh::stats {
namespace {

TEST(Stats, BucketIsTheFirstBoundNotExceeded) {
    for (std::size_t i = 0; i < kBoundsNs.size(); ++i) {
        const std::uint64_t bound = kBoundsNs[i];
        EXPECT_EQ(bucket_of(bound), i) << "at " << bound;
        EXPECT_EQ(bucket_of(bound + 1), i + 1) << "just above " << bound;
        EXPECT_EQ(bucket_of(bound - 1), i) << "just below " << bound;
    }
    EXPECT_EQ(bucket_of(0), 0u);
    EXPECT_EQ(bucket_of(3'600'000'000'000ull), kBuckets - 1);
}

struct StatsCounters : ::testing::Test {
    void SetUp() override {
        enabled = true;
        reset();
    }
    void TearDown() override { enabled = true; }
    static std::uint64_t calls(std::size_t m) { return methods[m].calls.load(); }
    static std::uint64_t errors(std::size_t m) { return methods[m].errors.load(); }
    static std::uint64_t in_class(ErrorClass c) { return error_classes[static_cast<std::size_t>(c)].load(); }
    static std::uint64_t histogram_total(std::size_t m) {
        std::uint64_t n = 0;
        for (const auto& b : methods[m].buckets) n += b.load();
        return n;
    }
};

TEST_F(StatsCounters, RecordCountsACallItsLatencyAndItsErrorClass) {
    record(1, 3'000'000, nullptr);  // a get of 3 ms
    const std::string_view refused = "invalid key: must be a string";
    record(1, 50'000, &refused);
    EXPECT_EQ(calls(1), 2u);
    EXPECT_EQ(errors(1), 1u);
    EXPECT_EQ(methods[1].buckets[5].load(), 1u);  // 2.5 ms < 3 ms <= 5 ms
    EXPECT_EQ(methods[1].buckets[0].load(), 1u);
    EXPECT_EQ(methods[1].sum_ns.load(), 3'050'000u);
    EXPECT_EQ(in_class(ErrorClass::Config), 1u);
    EXPECT_EQ(calls(0) + calls(2) + calls(3), 0u);
}

TEST_F(StatsCounters, AMeterCountsACallOnceWhateverItsRetries) {
    CallMeter meter;
    meter.start(3);
    meter.start(3);  // a retry of the same call keeps its start
    EXPECT_TRUE(meter.running());
    meter.fail("timeout");
    meter.succeed();  // finished already: nothing more
    EXPECT_EQ(calls(3), 1u);
    EXPECT_EQ(errors(3), 1u);
    EXPECT_EQ(histogram_total(3), 1u);
    EXPECT_EQ(in_class(ErrorClass::Timeout), 1u);
    meter.start(3);  // the next call
    meter.succeed();
    EXPECT_EQ(calls(3), 2u);
    EXPECT_EQ(errors(3), 1u);
}

TEST_F(StatsCounters, NothingIsCountedWhileCountingIsOff) {
    enabled = false;
    CallMeter meter;
    meter.start(0);
    EXPECT_FALSE(meter.running());
    meter.succeed();
    record(0, 1000, nullptr);
    bump(Counter::ClusterMoved);
    EXPECT_EQ(calls(0), 0u);
    EXPECT_EQ(read(Counter::ClusterMoved), 0u);
    enabled = true;
    meter.start(0);
    enabled = false;  // turned off mid-call: that call is not counted either
    meter.succeed();
    EXPECT_EQ(calls(0), 0u);
}

TEST_F(StatsCounters, RecordSinceMeasuresFromAMeterStart) {
    CallMeter meter;
    meter.start(2);
    const double started = meter.started_ms();
    record_since(2, started - 20.0, nullptr);  // a call that began 20 ms before the meter
    EXPECT_EQ(calls(2), 1u);
    EXPECT_GE(methods[2].sum_ns.load(), 20'000'000u);
    EXPECT_EQ(methods[2].buckets[7].load(), 1u);  // 10 ms < 20 ms <= 25 ms
}

TEST(Stats, ClassifiesErrorMessages) {
    const std::pair<std::string_view, ErrorClass> cases[] = {
        {"invalid key: must be a string", ErrorClass::Config},
        {"cosocket transport unavailable: not running inside nginx", ErrorClass::Config},
        {"protocol error: reply larger than 1024 bytes", ErrorClass::Protocol},
        {"WRONGTYPE Operation against a key holding the wrong kind of value", ErrorClass::Server},
        {"CLUSTERDOWN", ErrorClass::Server},
        {"write not durable: 0 of 1 replicas (wait_replicas) acknowledged it within 10 ms", ErrorClass::Server},
        {"role mismatch: expected master, got slave", ErrorClass::Server},
        {"timeout", ErrorClass::Timeout},
        {"connect() timed out", ErrorClass::Timeout},
        {"closed", ErrorClass::Closed},
        {"broken pipe", ErrorClass::Closed},
        {"connection refused", ErrorClass::Connect},
        {"A lone capital", ErrorClass::Connect},  // one letter is no error code
        {"", ErrorClass::Connect},
    };
    for (const auto& [err, expected] : cases) {
        EXPECT_EQ(static_cast<int>(classify(err)), static_cast<int>(expected)) << err;
    }
}

}  // namespace
}  // namespace rsh::stats
