#include "sentinel_client.hpp"

#include <algorithm>
#include <array>
#include <chrono>

#include "errors.hpp"
#include "pool.hpp"
#include "transport.hpp"

namespace rsh {
namespace {

PoolRegistry<Connection>& sentinel_pools() {
    static PoolRegistry<Connection>* registry = new PoolRegistry<Connection>();  // lives until exit
    return *registry;
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}

// One sentinel's connection during a round.
struct Exchange {
    std::optional<Pool<Connection>::Lease> lease;
    std::optional<Deadline> read_deadline;
    bool received = false;
};

// The tighter of a configured timeout and what is left of a budget.
double bounded(double timeout_ms, const std::optional<double>& budget_ms) {
    const double configured = native_timeout_ms(timeout_ms);
    return budget_ms ? std::min(configured, std::max(*budget_ms, 0.0)) : configured;
}

// Connects (a pooled connection, else a new one) and sends target i's request.
void start(const SentinelTarget& target, SentinelRound& round, std::size_t i, Exchange& ex,
           const std::optional<double>& budget_ms) {
    const double started = now_ms();
    Endpoint endpoint;
    endpoint.host = target.host;
    endpoint.port = target.port;
    endpoint.ssl = target.ssl;
    if (target.ssl) endpoint.tls = target.tls;
    PoolOptions options;
    options.size = static_cast<std::size_t>(target.pool_size);
    Pool<Connection>& pool = sentinel_pools().get(target.pool_name, options.size);
    const Deadline connect_deadline(bounded(target.connect_timeout, budget_ms));
    auto open = [&] { return Connection::open(endpoint, connect_deadline); };
    ex.lease.reset();
    ex.received = false;
    // what is left of the budget (a retry's whole exchange stays within it)
    auto left = [&]() -> std::optional<double> {
        if (!budget_ms) return std::nullopt;
        return *budget_ms - (now_ms() - started);
    };
    ex.lease.emplace(pool.acquire(options, connect_deadline, open));
    const std::string_view request =
        round.prepare(i, target.username, target.password, !ex.lease->reused() || target.force_auth);
    (*ex.lease)->send_all(request, Deadline(bounded(target.send_timeout, left())));
    ex.read_deadline.emplace(bounded(target.read_timeout, left()));
}

// Reads target i's answer; pools the connection after a clean answer.
void finish(const SentinelTarget& target, SentinelRound& round, std::size_t i, Exchange& ex) {
    std::array<char, 16384> buf;
    while (!round.done(i)) {
        const std::size_t n = (*ex.lease)->read_some(buf.data(), buf.size(), *ex.read_deadline);
        ex.received = true;
        round.feed(i, buf.data(), n);
    }
    if (round.failed(i)) {
        ex.lease.reset();  // a refused AUTH or a protocol error: never pooled
        return;
    }
    (*ex.lease)->keepalive_ms = target.keepalive_timeout;
    ex.lease->keep();
    ex.lease.reset();
}

// start + finish; a pooled connection found dead before any reply byte is
// replaced once. Failures go to the round.
void run(const SentinelTarget& target, SentinelRound& round, std::size_t i, Exchange& ex,
         const std::optional<double>& budget_ms, bool started) {
    for (int attempt = 0;; ++attempt) {
        try {
            if (!started || attempt > 0) start(target, round, i, ex, budget_ms);
            finish(target, round, i, ex);
            return;
        } catch (const IoError& e) {
            const bool stale = attempt == 0 && ex.lease && ex.lease->reused() && !ex.received &&
                               std::string(e.what()) != "timeout";
            ex.lease.reset();
            if (!stale) {
                round.fail(i, e.what());
                return;
            }
        }
    }
}

}  // namespace

SentinelLookup ask_sentinels(const std::vector<SentinelTarget>& targets, SentinelQuery::Ask ask,
                             const std::string& master_name) {
    SentinelRound round(ask, master_name, now_ms());
    std::vector<Exchange> exchanges(targets.size());
    for (const SentinelTarget& target : targets) round.add(target.retry);

    // every request out first, then the answers: the round costs the slowest one
    std::vector<bool> sent(targets.size(), false);
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (targets[i].retry) continue;
        Exchange& ex = exchanges[i];
        try {
            start(targets[i], round, i, ex, std::nullopt);
            sent[i] = true;
        } catch (const IoError& e) {
            // a pooled connection found dead is replaced in run(); a failed connect is final
            if (!(ex.lease && ex.lease->reused())) round.fail(i, e.what());
            ex.lease.reset();
        }
    }
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (!targets[i].retry && !round.done(i)) run(targets[i], round, i, exchanges[i], std::nullopt, sent[i]);
    }
    bool any_retry = false;
    for (const SentinelTarget& target : targets) any_retry = any_retry || target.retry;
    if (any_retry) {
        const double retries_start = now_ms();
        const std::optional<double> budget = round.retry_budget_ms(retries_start);
        for (std::size_t i = 0; i < targets.size(); ++i) {
            if (!targets[i].retry) continue;
            std::optional<double> left;
            if (budget) left = *budget - (now_ms() - retries_start);
            if (left && *left <= 0) {
                round.fail(i, "timeout");
                continue;
            }
            run(targets[i], round, i, exchanges[i], left, false);
        }
    }

    SentinelLookup lookup;
    lookup.failures.resize(targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (round.failed(i)) lookup.failures[i] = round.error(i).empty() ? "failed" : round.error(i);
    }
    lookup.choice = round.choose();
    if (lookup.choice.kind != SentinelChoice::Kind::AskPromoted) return lookup;

    // a failover in progress: its leader tells which replica it promotes (after
    // an o_down, the others trying until one is elected tell none)
    const std::vector<std::size_t> leaders = lookup.choice.leaders;
    const SentinelAddress named = lookup.choice.address;
    lookup.choice.kind = SentinelChoice::Kind::Master;
    for (const std::size_t leader : leaders) {
        SentinelRound follow_up(SentinelQuery::Ask::Promoted, master_name, now_ms());
        follow_up.add(false);
        Exchange ex;
        run(targets[leader], follow_up, 0, ex, std::nullopt, false);
        if (follow_up.failed(0)) continue;
        const SentinelAnswer& answer = follow_up.answer(0);
        if (answer.kind == SentinelAnswer::Kind::Promoted ||
            (answer.kind == SentinelAnswer::Kind::Master && answer.address != named)) {
            lookup.choice.from = leader;
            lookup.choice.address = answer.address;
            lookup.promoted = answer.kind == SentinelAnswer::Kind::Promoted;
            break;
        }
    }
    return lookup;
}

}  // namespace rsh
