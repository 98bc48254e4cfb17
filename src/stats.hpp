// Per-process counters of what the core sees and the Lua drivers cannot: the
// native transport's connections and the Redis Cluster redirections, retries and
// slot-map loads (both transports run ClusterOperation and Topology). The Lua
// module (`resty.session.hiredis.stats`) merges them with its own counters.
//
// Relaxed atomics: an increment is one locked add, nothing allocates, and a
// reader in another thread sees a count that is merely a little old.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

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

inline std::atomic<std::uint64_t> counters[kCounters];
inline std::atomic<bool> enabled{true};

inline void bump(Counter c) noexcept {
    if (enabled.load(std::memory_order_relaxed)) {
        counters[static_cast<std::size_t>(c)].fetch_add(1, std::memory_order_relaxed);
    }
}

inline std::uint64_t read(Counter c) noexcept {
    return counters[static_cast<std::size_t>(c)].load(std::memory_order_relaxed);
}

inline void reset() noexcept {
    for (auto& c : counters) c.store(0, std::memory_order_relaxed);
}

}  // namespace rsh::stats
