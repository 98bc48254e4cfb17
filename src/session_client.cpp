#include "session_client.hpp"

#include <array>

#include "errors.hpp"
#include "pool.hpp"
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
    while (auto request = op.next_request(conn.server_version)) {
        conn.send_all(*request, Deadline(send_timeout));
        bool complete = false;
        while (!complete) {
            std::size_t n = conn.read_some(buf.data(), buf.size(), Deadline(read_timeout));
            complete = op.feed(buf.data(), n);
        }
    }
}

std::string identity_of(const Config& config) {
    if (!config.password) return "";
    return config.username.value_or("") + '\n' + *config.password;
}

// AUTH when the connection is not authenticated as config says (or force_auth),
// SELECT when on another database, HELLO once. Redis refusals end the call.
std::optional<Result> greet(Connection& conn, const Config& config, const Deadline& deadline) {
    HandshakeArgs args;
    const std::string identity = identity_of(config);
    const bool auth = config.password && (conn.authenticated_as != identity || config.force_auth.value_or(false));
    if (auth) {
        args.username = config.username;
        args.password = config.password;
    }
    const long long database = config.database.value_or(0);
    if (database != conn.selected_database) args.database = database;
    args.hello = !conn.greeted;
    auto op = Operation::handshake(args);
    if (!op) return std::nullopt;

    const double left = deadline.remaining_ms();
    run(conn, *op, left, left);
    const Result& result = op->result();
    if (result.kind == Result::Kind::Error) return result;
    if (auth) conn.authenticated_as = identity;
    conn.selected_database = database;
    if (args.hello) {
        conn.greeted = true;
        conn.server_version = result.version;
    }
    return std::nullopt;
}

}  // namespace

Result execute(const Config& config, Operation& op) {
    const Endpoint endpoint = Endpoint::from(config);
    PoolOptions options;
    options.size = static_cast<std::size_t>(config.pool_size);
    if (config.backlog) options.backlog = static_cast<std::size_t>(*config.backlog);
    Pool<Connection>& pool = pools().get(config.pool_name(), options.size);

    // A pooled connection that turns out dead before any reply byte is replaced
    // once by a fresh one; the call itself does not fail.
    for (int attempt = 0;; ++attempt) {
        const Deadline connect_deadline(config.connect_timeout);
        std::optional<Pool<Connection>::Lease> lease;
        try {
            lease.emplace(pool.acquire(options, connect_deadline,
                                       [&] { return Connection::open(endpoint, connect_deadline); }));
            const Deadline greet_deadline = lease->reused() ? Deadline(config.read_timeout) : connect_deadline;
            if (auto refused = greet(**lease, config, greet_deadline)) return *refused;  // lease closes it
            run(**lease, op, config.send_timeout, config.read_timeout);
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
