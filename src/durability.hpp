// Opt-in durability of writes: a set or delete also waits, in the same round
// trip, for this many replicas to acknowledge it (WAIT after the write), and
// fails when fewer did. Asynchronous replication otherwise loses a write that
// the master acknowledged and a failover then discarded.
#pragma once

namespace rsh {

constexpr double kDefaultWaitTimeoutMs = 1000;

struct Durability {
    int replicas = 0;          // 0: no WAIT
    long long timeout_ms = static_cast<long long>(kDefaultWaitTimeoutMs);

    bool enabled() const { return replicas > 0; }
};

}  // namespace rsh
