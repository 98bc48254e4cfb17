#include "session_client.hpp"

#include <array>
#include <map>
#include <mutex>

#include "errors.hpp"
#include "pool.hpp"
#include "session_state.hpp"
#include "stats.hpp"
#include "transport.hpp"

namespace rsh {
namespace {

PoolRegistry<Connection>& pools() {
    static PoolRegistry<Connection>* registry = new PoolRegistry<Connection>();  // lives until exit
    return *registry;
}

// Server versions learned by a handshake of each pool (per process). A pool
// whose credentials and database were accepted once has its later handshakes
// sent in the same write as the first command: no extra round trip. The first
// connection of a pool is set up on its own round trip, so that a wrong
// password or database never lets a write through on the wrong identity.
class ProvenPools {
public:
    std::optional<long> version(const std::string& pool) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = versions_.find(pool);
        if (it == versions_.end()) return std::nullopt;
        return it->second;
    }
    void record(const std::string& pool, long version) {
        std::lock_guard<std::mutex> lock(mutex_);
        versions_[pool] = version;
    }

private:
    std::mutex mutex_;
    std::map<std::string, long> versions_;
};

ProvenPools& proven() {
    static ProvenPools* pools = new ProvenPools();  // lives until exit
    return *pools;
}

// Sends each round trip and feeds replies until the operation is finished; with
// a prefix, the handshake goes in front of the first round trip.
void run(Connection& conn, Operation& op, const HandshakeArgs* prefix, double send_timeout,
         double read_timeout) {
    std::array<char, 16384> buf;
    while (auto request = op.next_request(conn.session.server_version)) {
        std::string_view bytes = *request;
        if (prefix) {
            bytes = op.prefix_handshake(*prefix);
            prefix = nullptr;
        }
        conn.send_all(bytes, Deadline(send_timeout));
        bool complete = false;
        while (!complete) {
            std::size_t n = conn.read_some(buf.data(), buf.size(), Deadline(read_timeout));
            complete = op.feed(buf.data(), n);
        }
    }
}

// Brings a new connection of a pool not yet proven to what config asks for, on
// a round trip of its own. Redis refusals end the call.
std::optional<Result> greet(Connection& conn, const Config& config, const std::string& pool_name,
                            const HandshakeArgs& args, const Deadline& deadline) {
    auto op = Operation::handshake(args);
    op->set_reader_limits(config.reader_limits());
    const double left = deadline.remaining_ms();
    run(conn, *op, nullptr, left, left);
    const Result& result = op->result();
    if (result.kind == Result::Kind::Error) return result;
    conn.session.apply(config, args, result);
    proven().record(pool_name, result.version);
    return std::nullopt;
}

}  // namespace

Result execute(const Config& config, const std::string& pool_name, Operation& op) {
    const Endpoint endpoint = Endpoint::from(config);
    PoolOptions options;
    options.size = static_cast<std::size_t>(config.pool_size);
    if (config.backlog) options.backlog = static_cast<std::size_t>(*config.backlog);
    Pool<Connection>& pool = pools().get(pool_name, options.size);
    op.set_reader_limits(config.reader_limits());
    op.set_durability(config.durability());
    const double connect_timeout = native_timeout_ms(config.connect_timeout);
    const double send_timeout = native_timeout_ms(config.send_timeout);
    const double read_timeout = native_timeout_ms(config.read_timeout);

    // A pooled connection that turns out dead before any reply byte is replaced
    // once by a fresh one; the call itself does not fail.
    for (int attempt = 0;; ++attempt) {
        const Deadline connect_deadline(connect_timeout);
        std::optional<Pool<Connection>::Lease> lease;
        try {
            lease.emplace(pool.acquire(options, connect_deadline,
                                       [&] { return Connection::open(endpoint, connect_deadline); }));
            stats::bump(lease->reused() ? stats::Counter::ConnectionsReused : stats::Counter::ConnectionsOpened);
            Connection& conn = **lease;
            const HandshakeArgs args = handshake_args(config, conn.session);
            const HandshakeArgs* prefix = nullptr;
            if (!args.sends_nothing()) {
                std::optional<long> known = conn.session.greeted ? conn.session.server_version
                                                                 : proven().version(pool_name);
                if (known) {
                    if (!conn.session.greeted) conn.session.server_version = *known;
                    prefix = &args;
                } else if (auto refused = greet(conn, config, pool_name, args, connect_deadline)) {
                    stats::bump(stats::Counter::ConnectionsFailed);
                    return *refused;  // the lease closes the connection
                }
            }
            run(conn, op, prefix, send_timeout, read_timeout);
            if (prefix) {
                if (op.handshake_failed()) return op.result();  // the lease closes the connection
                Result greeted;
                greeted.version = args.hello ? op.learned_version() : conn.session.server_version;
                conn.session.apply(config, args, greeted);
                proven().record(pool_name, conn.session.server_version);
            }
        } catch (const IoError& e) {
            if (!lease) stats::bump(stats::Counter::ConnectionsFailed);
            const bool retry = attempt == 0 && lease && lease->reused() && !op.received_bytes() &&
                               std::string(e.what()) != "timeout";
            if (!retry) return Result::error(e.what());
            op.restart();
            continue;  // the lease's destructor closed the dead connection
        }
        (*lease)->keepalive_ms = config.keepalive_timeout;
        lease->keep();
        return op.result();
    }
}

void retire_pool(const std::string& pool_name) { pools().retire(pool_name); }

}  // namespace rsh
