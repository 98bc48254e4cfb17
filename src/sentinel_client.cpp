#include "sentinel_client.hpp"

#include <array>

#include "errors.hpp"
#include "pool.hpp"
#include "transport.hpp"

namespace rsh {
namespace {

PoolRegistry<Connection>& sentinel_pools() {
    static PoolRegistry<Connection>* registry = new PoolRegistry<Connection>();  // lives until exit
    return *registry;
}

}  // namespace

SentinelAnswer ask_sentinel(const SentinelTarget& target, SentinelQuery::Ask ask, const std::string& master_name) {
    Endpoint endpoint;
    endpoint.host = target.host;
    endpoint.port = target.port;
    PoolOptions options;
    options.size = static_cast<std::size_t>(target.pool_size);
    Pool<Connection>& pool = sentinel_pools().get(target.pool_name, options.size);

    // A pooled connection found dead before any reply byte is replaced once.
    for (int attempt = 0;; ++attempt) {
        const Deadline connect_deadline(native_timeout_ms(target.connect_timeout));
        std::optional<Pool<Connection>::Lease> lease;
        bool received = false;
        try {
            lease.emplace(pool.acquire(options, connect_deadline,
                                       [&] { return Connection::open(endpoint, connect_deadline); }));
            SentinelQuery query(ask, master_name, target.username, target.password,
                                !lease->reused() || target.force_auth);
            (*lease)->send_all(query.request(), Deadline(native_timeout_ms(target.send_timeout)));
            std::array<char, 16384> buf;
            const Deadline read_deadline(native_timeout_ms(target.read_timeout));
            bool complete = false;
            while (!complete) {
                const std::size_t n = (*lease)->read_some(buf.data(), buf.size(), read_deadline);
                received = true;
                complete = query.feed(buf.data(), n);
            }
            SentinelAnswer answer = query.answer();
            // a refused AUTH leaves the connection unauthenticated: never pool it
            if (answer.kind == SentinelAnswer::Kind::Error && !lease->reused()) return answer;
            (*lease)->keepalive_ms = target.keepalive_timeout;
            lease->keep();
            return answer;
        } catch (const IoError& e) {
            const bool retry = attempt == 0 && lease && lease->reused() && !received &&
                               std::string(e.what()) != "timeout";
            if (!retry) {
                SentinelAnswer failed;
                failed.error = e.what();
                return failed;
            }
        }
    }
}

}  // namespace rsh
