// The native transport's cluster call path: the shared slot map, a refresh
// from the nodes when it is missing or stale, and each round's node batches
// run one node after the other (blocking sockets: no parallelism here; the
// cosocket driver runs the nodes of a round in parallel), each over that
// node's own pool with the usual handshake (session_client).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "cluster_config.hpp"
#include "cluster_operation.hpp"
#include "operation.hpp"
#include "topology.hpp"

namespace rsh {

// A node's single-node configuration and pool name, derived once.
struct NodeTarget {
    Config config;
    std::string pool_name;
};

class ClusterClient {
public:
    explicit ClusterClient(ClusterConfig config);

    const ClusterConfig& config() const { return config_; }
    const std::shared_ptr<ClusterTopology>& topology() const { return topology_; }
    ClusterPolicy policy() const { return {config_.max_redirections, config_.max_connection_attempts, config_.base.durability()}; }
    const NodeTarget& target(const NodeAddress& node);

    // Runs a started cluster operation to its end (never throws for I/O or Redis failures).
    Result execute(ClusterOperation& op);
    // Loads the slot map from the first node that answers (known nodes, then the seeds).
    // Returns "" or the last error.
    std::string refresh();

private:
    ClusterConfig config_;
    std::shared_ptr<ClusterTopology> topology_;
    std::map<NodeAddress, NodeTarget> targets_;
    Operation raw_;  // one node's round trip at a time
};

}  // namespace rsh
