#include "cluster_config.hpp"

namespace rsh {

std::string ClusterConfig::topology_key() const {
    Config identity = base;
    identity.pool.reset();
    std::string key = name.value_or("") + "|" + identity.pool_name() + "|";
    for (const auto& node : nodes) key += node.text() + ",";
    return key;
}

Config ClusterConfig::node_config(const NodeAddress& node) const {
    Config c = base;
    c.host = node.host;
    c.port = node.port;
    c.socket.reset();
    c.database.reset();
    return c;
}

std::string ClusterConfig::node_pool_name(const NodeAddress& node) const {
    Config c = node_config(node);
    const std::optional<std::string> custom = c.pool;
    c.pool.reset();
    std::string derived = c.pool_name();  // endpoint + TLS + identity
    if (!custom) return derived;
    // A custom name groups a cluster's pools; it never makes two nodes (or two
    // identities) share a connection.
    return *custom + "|" + derived;
}

}  // namespace rsh
