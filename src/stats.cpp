#include "stats.hpp"

#include <time.h>

namespace rsh::stats {

std::uint64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::size_t bucket_of(std::uint64_t elapsed_ns) noexcept {
    std::size_t i = 0;
    while (i < kBoundsNs.size() && elapsed_ns > kBoundsNs[i]) ++i;
    return i;
}

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }

// A Redis error reply: an upper-case code of two characters or more (ERR,
// WRONGTYPE, NOAUTH, READONLY, CLUSTERDOWN, MASTERDOWN...), then a space or the end.
bool is_error_reply(std::string_view err) {
    if (err.size() < 2 || !is_upper(err[0])) return false;
    std::size_t i = 1;
    while (i < err.size() && (is_upper(err[i]) || err[i] == '_' || err[i] == '-')) ++i;
    return i >= 2 && (i == err.size() || err[i] == ' ');
}

}  // namespace

ErrorClass classify(std::string_view err) noexcept {
    // messages without a Redis error code that still come from a server's answer
    for (std::string_view m : {"write not durable", "role mismatch", "failover in progress",
                               "too many cluster redirections", "no slaves available"}) {
        if (starts_with(err, m)) return ErrorClass::Server;
    }
    if (starts_with(err, "invalid ") || starts_with(err, "cosocket transport unavailable")) {
        return ErrorClass::Config;
    }
    if (starts_with(err, "protocol error:")) return ErrorClass::Protocol;
    if (is_error_reply(err)) return ErrorClass::Server;
    if (err.find("timeout") != std::string_view::npos || err.find("timed out") != std::string_view::npos) {
        return ErrorClass::Timeout;
    }
    if (err == "closed" || err == "broken pipe" || err == "connection reset by peer") return ErrorClass::Closed;
    // connection refused, ssl handshake failed, too many waiting connect
    // operations, no hosts available, resolver failures...
    return ErrorClass::Connect;
}

void record(std::size_t method, std::uint64_t elapsed_ns, const std::string_view* err) noexcept {
    if (!on() || method >= kMethods) return;
    MethodCounters& m = methods[method];
    m.calls.fetch_add(1, std::memory_order_relaxed);
    m.sum_ns.fetch_add(elapsed_ns, std::memory_order_relaxed);
    m.buckets[bucket_of(elapsed_ns)].fetch_add(1, std::memory_order_relaxed);
    if (err) {
        m.errors.fetch_add(1, std::memory_order_relaxed);
        error_classes[static_cast<std::size_t>(classify(*err))].fetch_add(1, std::memory_order_relaxed);
    }
}

void record_since(std::size_t method, double started_ms, const std::string_view* err) noexcept {
    const std::uint64_t now = now_ns();
    const auto started = static_cast<std::uint64_t>(started_ms * 1e6);
    record(method, now > started ? now - started : 0, err);
}

void reset() noexcept {
    for (auto& c : counters) c.store(0, std::memory_order_relaxed);
    for (auto& c : error_classes) c.store(0, std::memory_order_relaxed);
    for (auto& m : methods) {
        m.calls.store(0, std::memory_order_relaxed);
        m.errors.store(0, std::memory_order_relaxed);
        m.sum_ns.store(0, std::memory_order_relaxed);
        for (auto& b : m.buckets) b.store(0, std::memory_order_relaxed);
    }
}

}  // namespace rsh::stats
