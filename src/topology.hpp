// Redis Cluster topology: which node serves each slot. Parsed from CLUSTER
// SHARDS (Redis >= 7.0) or CLUSTER SLOTS, patched by MOVED redirections, and
// shared per process (an nginx worker is a process) by every call to a cluster.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "resp.hpp"
#include "slots.hpp"

namespace rsh {

struct NodeAddress {
    std::string host;
    int port = 0;

    std::string text() const;  // "host:port" ("[::1]:port" for IPv6)
    bool operator==(const NodeAddress& o) const { return port == o.port && host == o.host; }
    bool operator<(const NodeAddress& o) const { return host < o.host || (host == o.host && port < o.port); }
};

// "host:port" as MOVED and ASK carry it (the host may be an IPv6 address, or
// empty: "the endpoint of the node you asked"); nullopt when malformed.
std::optional<NodeAddress> parse_node_address(std::string_view text, const NodeAddress& asked);

class SlotMap {
public:
    static constexpr std::uint16_t kNoNode = 0xffff;

    bool empty() const { return nodes_.empty(); }
    // The master serving slot, or nullptr when no node covers it.
    const NodeAddress* node_for(int slot) const;
    // Assigns slots [first, last] to node (added when new).
    void assign(int first, int last, const NodeAddress& node);
    const std::vector<NodeAddress>& nodes() const { return nodes_; }
    // Slots covered by some node (16384 on a healthy cluster).
    int covered() const;

private:
    std::vector<NodeAddress> nodes_;
    std::array<std::uint16_t, kClusterSlots> owner_ = make_empty();
    static std::array<std::uint16_t, kClusterSlots> make_empty() {
        std::array<std::uint16_t, kClusterSlots> a{};
        a.fill(kNoNode);
        return a;
    }
};

// Endpoints: an empty string, "?" or NULL means "the address you reached me
// on" (asked.host); tls picks the TLS port where the reply has one.
// Both throw ProtocolError on a reply of the wrong shape (an error reply included).
SlotMap parse_cluster_shards(const Reply& reply, const NodeAddress& asked, bool tls);
SlotMap parse_cluster_slots(const Reply& reply, const NodeAddress& asked);

// The current map of one cluster (per process), with the refresh rules: a
// MOVED patches one slot and asks for one refresh, which the next call to
// take_refresh() gets (only one caller gets it).
class ClusterTopology {
public:
    std::shared_ptr<const SlotMap> map();
    void replace(SlotMap map);
    void patch(int slot, const NodeAddress& node);
    void want_refresh();
    // True for exactly one caller after want_refresh(), and when the map is empty.
    bool take_refresh();
    std::uint64_t version();
    // Remember whether the servers answer CLUSTER SHARDS (Redis < 7: no).
    bool use_shards();
    void shards_unsupported();

    // Nodes that failed a round trip (a timeout: maybe stalled). A stalled master
    // answers what waited in its socket when it wakes, before it learns that its
    // replica took over, so a write sent to it then is acknowledged and lost: the
    // next call to a suspect node sends a lone PING first, and only its answer
    // (given after the node has read what the cluster told it meanwhile) clears it.
    void suspect(const NodeAddress& node);
    bool suspected(const NodeAddress& node);  // no lock while nothing is suspect
    void cleared(const NodeAddress& node);
    // Nodes to ask for the slot map: the known masters, then the seeds, the
    // suspect ones last (a stalled node would spend the caller's time).
    std::vector<NodeAddress> refresh_candidates(const std::vector<NodeAddress>& seeds);

private:
    std::mutex mutex_;
    std::vector<NodeAddress> suspects_;
    std::atomic<bool> any_suspect_{false};
    std::shared_ptr<const SlotMap> map_ = std::make_shared<SlotMap>();
    std::uint64_t version_ = 0;
    bool refresh_wanted_ = false;
    bool shards_ = true;
};

// The topology of the cluster named by key (seed nodes and identity), created on first use.
std::shared_ptr<ClusterTopology> cluster_topology(const std::string& key);

}  // namespace rsh
