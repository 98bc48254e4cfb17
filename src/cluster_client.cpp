#include "cluster_client.hpp"

#include <algorithm>
#include <thread>

#include "errors.hpp"
#include "session_client.hpp"
#include "socket_io.hpp"

namespace rsh {
namespace {

// Connection failures worth another node or another try; a timeout is not (the
// call already spent its time), nor a refused handshake (wrong credentials).
bool retryable(const std::string& error) { return error != "timeout"; }

}  // namespace

ClusterClient::ClusterClient(ClusterConfig config)
    : config_(std::move(config)), topology_(cluster_topology(config_.topology_key())) {}

const NodeTarget& ClusterClient::target(const NodeAddress& node) {
    auto it = targets_.find(node);
    if (it == targets_.end()) {
        NodeTarget t{config_.node_config(node), config_.node_pool_name(node)};
        it = targets_.emplace(node, std::move(t)).first;
    }
    return it->second;
}

std::string ClusterClient::refresh() {
    const std::vector<NodeAddress> candidates = topology_->refresh_candidates(config_.nodes);
    std::string last_error = "no cluster node answered";
    int failures = 0;
    for (const auto& node : candidates) {
        if (failures >= std::max(config_.max_connection_attempts, 1) + 1) break;
        const NodeTarget& t = target(node);
        for (bool shards = topology_->use_shards();; shards = false) {
            CommandBuffer query;
            if (shards) query.add({"CLUSTER", "SHARDS"}); else query.add({"CLUSTER", "SLOTS"});
            raw_.start_raw(query);
            Result result = rsh::execute(t.config, t.pool_name, raw_);
            if (!raw_.finished() || raw_.handshake_failed()) {
                last_error = result.text;
                if (raw_.handshake_failed()) return last_error;  // credentials: every node says the same
                ++failures;
                break;
            }
            const Reply& reply = *raw_.raw_replies().front();
            if (reply.is_error()) {
                if (shards) {  // Redis < 7: CLUSTER SLOTS
                    topology_->shards_unsupported();
                    continue;
                }
                last_error = reply.str;
                ++failures;
                break;
            }
            try {
                SlotMap map = shards ? parse_cluster_shards(reply, node, t.config.ssl)
                                     : parse_cluster_slots(reply, node);
                if (map.empty()) {
                    last_error = "CLUSTERDOWN the cluster serves no slot";
                    ++failures;
                    break;
                }
                topology_->replace(std::move(map));
                return "";
            } catch (const ProtocolError& e) {
                last_error = e.what();
                ++failures;
                break;
            }
        }
    }
    return last_error;
}

Result ClusterClient::execute(ClusterOperation& op) {
    const Deadline budget(config_.retry_budget_ms());
    for (;;) {
        if (topology_->take_refresh()) {
            std::string err = refresh();
            if (!err.empty() && topology_->map()->empty()) {
                op.fail(err);
                return op.result();
            }
        }
        if (!op.plan_round()) break;
        auto& batches = op.batches();
        for (std::size_t i = 0; i < batches.size() && !op.finished(); ++i) {
            const NodeTarget& t = target(batches[i].node);
            raw_.start_raw(batches[i].commands);
            Result result = rsh::execute(t.config, t.pool_name, raw_);
            if (raw_.finished() && !raw_.handshake_failed()) {
                op.node_replies(i, raw_.raw_replies());
            } else {
                op.node_failed(i, result.text, !raw_.handshake_failed() && retryable(result.text));
            }
        }
        raw_.trim();
        const RoundOutcome outcome = op.end_round();
        if (outcome.finished) break;
        if (outcome.refresh) topology_->want_refresh();
        if (outcome.backoff_ms > 0) {
            if (budget.remaining_ms() <= outcome.backoff_ms) {
                op.fail(op.last_retry_error());
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(outcome.backoff_ms));
        }
    }
    return op.result();
}

}  // namespace rsh
