// The Redis Cluster storage configuration: upstream's resty.session.redis.cluster
// fields (nodes, max_redirections, ...) around the single-node Config, whose
// identity, timeout, pool and TLS fields apply to every node.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "topology.hpp"

namespace rsh {

constexpr int kDefaultMaxRedirections = 5;
constexpr int kDefaultMaxConnectionAttempts = 3;

struct ClusterConfig {
    Config base;  // host, port, socket and database are not used (rejected or ignored)
    std::vector<NodeAddress> nodes;  // seed nodes
    std::optional<std::string> name, lock_zone, lock_prefix;  // accepted; name keys the topology
    int max_redirections = kDefaultMaxRedirections;
    int max_connection_attempts = kDefaultMaxConnectionAttempts;
    std::optional<double> max_connection_timeout;  // ms; bounds a call's retries

    // The shared topology's key: the seeds and everything that changes what a node answers.
    std::string topology_key() const;
    // The single-node configuration of one node.
    Config node_config(const NodeAddress& node) const;
    // One pool per node and identity, also under a custom `pool` name.
    std::string node_pool_name(const NodeAddress& node) const;
    // How long a call may keep retrying (redirections, TRYAGAIN, CLUSTERDOWN,
    // a failed node): max_connection_timeout, else read_timeout.
    // (A 0 read_timeout is the transport's default: 60000 ms here; the cosocket
    // driver's budget follows the same figure, nginx's own default.)
    double retry_budget_ms() const { return max_connection_timeout.value_or(native_timeout_ms(base.read_timeout)); }
};

}  // namespace rsh
