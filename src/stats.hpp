// Per-process counters: the storage calls (per method: calls, errors, a latency
// histogram; per error class) and what the core sees that the Lua drivers cannot
// (the native transport's connections, the Redis Cluster redirections, retries
// and slot-map loads). The Lua module (`resty.session.hiredis.stats`) merges
// them with the drivers' own counters (cosocket connections, pipeline batches,
// sentinel lookups).
//
// A call is timed where it enters the core and counted where its result is
// made, so counting adds no crossing between Lua and C (a CallMeter rides the
// call's Operation over cosockets, or lives on the native call's stack).
//
// Relaxed atomics: an increment is one locked add, nothing allocates, and a
// reader in another thread sees a count that is merely a little old.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace rsh::stats {

enum class Counter : std::size_t {
    ConnectionsOpened,   // native: a pool miss, connected
    ConnectionsReused,   // native: a pool hit
    ConnectionsFailed,   // native: connect, TLS or first handshake failed
    ClusterMoved,        // MOVED replies followed
    ClusterAsk,          // ASK replies followed
    ClusterRetries,      // rounds a cluster call ran again (redirection, TRYAGAIN, CLUSTERDOWN, node failure)
    ClusterRefreshes,    // slot maps loaded
    Count,
};

constexpr std::size_t kCounters = static_cast<std::size_t>(Counter::Count);

// Lua names, in Counter order: "<group>.<field>" of stats().
inline constexpr const char* kNames[kCounters] = {
    "connections.opened", "connections.reused", "connections.failed",
    "cluster.moved", "cluster.ask", "cluster.retries", "cluster.refreshes",
};

// The storage methods, in the order of their ids (1-based in Lua: src/lua_operation.hpp).
constexpr std::size_t kMethods = 4;
inline constexpr const char* kMethodNames[kMethods] = {"set", "get", "delete", "read_metadata"};

// What an error message says went wrong (classify).
enum class ErrorClass : std::size_t { Timeout, Connect, Closed, Protocol, Server, Config, Count };
constexpr std::size_t kErrorClasses = static_cast<std::size_t>(ErrorClass::Count);
inline constexpr const char* kErrorClassNames[kErrorClasses] = {
    "timeout", "connect", "closed", "protocol", "server", "config",
};

// Latency buckets: upper bounds in nanoseconds (0.1 ms .. 1 s); one more bucket counts the rest.
inline constexpr std::array<std::uint64_t, 12> kBoundsNs = {
    100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000,
    10'000'000, 25'000'000, 50'000'000, 100'000'000, 250'000'000, 1'000'000'000,
};
constexpr std::size_t kBuckets = kBoundsNs.size() + 1;

struct MethodCounters {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> sum_ns{0};
    std::atomic<std::uint64_t> buckets[kBuckets] = {};
};

inline std::atomic<std::uint64_t> counters[kCounters];
inline MethodCounters methods[kMethods];
inline std::atomic<std::uint64_t> error_classes[kErrorClasses];
inline std::atomic<bool> enabled{true};

inline bool on() noexcept { return enabled.load(std::memory_order_relaxed); }

inline void bump(Counter c) noexcept {
    if (on()) counters[static_cast<std::size_t>(c)].fetch_add(1, std::memory_order_relaxed);
}

inline std::uint64_t read(Counter c) noexcept {
    return counters[static_cast<std::size_t>(c)].load(std::memory_order_relaxed);
}

// Nanoseconds of the monotonic clock (clock_gettime(CLOCK_MONOTONIC): a vDSO read).
std::uint64_t now_ns() noexcept;

// The bucket (0-based) of a latency: the first bound it does not exceed, else the last bucket.
std::size_t bucket_of(std::uint64_t elapsed_ns) noexcept;

// The class of a storage call's error message (as it reaches Lua).
ErrorClass classify(std::string_view err) noexcept;

// Counts one finished call of method (0-based) that took elapsed_ns; err is the
// error message it returned, or nullptr when it succeeded.
void record(std::size_t method, std::uint64_t elapsed_ns, const std::string_view* err) noexcept;

// record for a call started at started_ms (CallMeter::started_ms) and ending now.
void record_since(std::size_t method, double started_ms, const std::string_view* err) noexcept;

void reset() noexcept;

// One call being timed: started when the call enters the core, finished once
// (whatever its retries) when its result is made or its failure is known.
// Counting turned off at start leaves the call uncounted.
class CallMeter {
public:
    // Starts timing a call of method (0-based), unless one is already being
    // timed (a retry of the same call keeps its start).
    void start(std::size_t method) noexcept {
        if (running_ || !on()) return;
        method_ = method;
        started_ns_ = now_ns();
        running_ = true;
    }
    void succeed() noexcept { finish(nullptr); }
    void fail(std::string_view err) noexcept { finish(&err); }
    void finish(const std::string_view* err) noexcept {
        if (!running_) return;
        running_ = false;
        record(method_, now_ns() - started_ns_, err);
    }
    bool running() const noexcept { return running_; }
    // The start in ms of the stats clock (for a call whose end is known in Lua: record_since).
    double started_ms() const noexcept { return static_cast<double>(started_ns_) / 1e6; }

private:
    std::uint64_t started_ns_ = 0;
    std::size_t method_ = 0;
    bool running_ = false;
};

}  // namespace rsh::stats
