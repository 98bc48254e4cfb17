#include "session_client.hpp"

#include <array>

#include "errors.hpp"
#include "pool.hpp"
#include "session_state.hpp"
#include "transport.hpp"

namespace rsh {
namespace {

PoolRegistry<Connection>& pools() {
    static PoolRegistry<Connection>* registry = new PoolRegistry<Connection>();  // lives until exit
    return *registry;
}

// Sends each round trip and feeds replies until the operation is finished.
void run(Connection& conn, Operation& op, double send_timeout, double read_timeout) {
    std::array<char, 16384> buf;
    while (auto request = op.next_request(conn.session.server_version)) {
        conn.send_all(*request, Deadline(send_timeout));
        bool complete = false;
        while (!complete) {
            std::size_t n = conn.read_some(buf.data(), buf.size(), Deadline(read_timeout));
            complete = op.feed(buf.data(), n);
        }
    }
}

// Brings the connection's session to what config asks for. Redis refusals end the call.
std::optional<Result> greet(Connection& conn, const Config& config, const Deadline& deadline) {
    const HandshakeArgs args = handshake_args(config, conn.session);
    auto op = Operation::handshake(args);
    if (!op) return std::nullopt;
    op->set_reader_limits(config.reader_limits());

    const double left = deadline.remaining_ms();
    run(conn, *op, left, left);
    const Result& result = op->result();
    if (result.kind == Result::Kind::Error) return result;
    conn.session.apply(config, args, result);
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
            const Deadline greet_deadline = lease->reused() ? Deadline(read_timeout) : connect_deadline;
            if (auto refused = greet(**lease, config, greet_deadline)) return *refused;  // lease closes it
            run(**lease, op, send_timeout, read_timeout);
        } catch (const IoError& e) {
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

}  // namespace rsh
