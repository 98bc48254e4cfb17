#include "topology.hpp"

#include <algorithm>
#include <charconv>

#include "errors.hpp"
#include "stats.hpp"

namespace rsh {
namespace {

[[noreturn]] void bad_reply(const char* what) {
    throw ProtocolError(std::string("protocol error: unexpected reply to CLUSTER ") + what);
}

bool is_integer(const Reply* r) { return r && r->type == Reply::Type::Integer; }

// An endpoint field: a string, or NULL / "" / "?" (unknown: the node we asked).
std::string endpoint(const Reply* r, const NodeAddress& asked) {
    if (!r || r->type == Reply::Type::Nil) return asked.host;
    if (r->type != Reply::Type::String && r->type != Reply::Type::Status) return asked.host;
    if (r->str.empty() || r->str == "?") return asked.host;
    return r->str;
}

// A flat array of field, value pairs (CLUSTER SHARDS' maps in RESP2).
const Reply* field(const Reply& map, std::string_view name) {
    if (map.type != Reply::Type::Array) return nullptr;
    for (std::size_t i = 0; i + 1 < map.elements.size(); i += 2) {
        const Reply* key = map.elements[i].get();
        if (key && key->str == name) return map.elements[i + 1].get();
    }
    return nullptr;
}

}  // namespace

std::string NodeAddress::text() const {
    const bool ipv6 = host.find(':') != std::string::npos;
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<NodeAddress> parse_node_address(std::string_view text, const NodeAddress& asked) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view host = text.substr(0, colon);
    std::string_view port = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    int value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) return std::nullopt;
    NodeAddress node;
    node.host = (host.empty() || host == "?") ? asked.host : std::string(host);
    node.port = value;
    return node;
}

const NodeAddress* SlotMap::node_for(int slot) const {
    if (slot < 0 || slot >= kClusterSlots) return nullptr;
    const std::uint16_t at = owner_[static_cast<std::size_t>(slot)];
    return at == kNoNode ? nullptr : &nodes_[at];
}

void SlotMap::assign(int first, int last, const NodeAddress& node) {
    if (first < 0 || last >= kClusterSlots || first > last) return;
    std::size_t at = 0;
    while (at < nodes_.size() && !(nodes_[at] == node)) ++at;
    if (at == nodes_.size()) nodes_.push_back(node);
    for (int slot = first; slot <= last; ++slot) owner_[static_cast<std::size_t>(slot)] = static_cast<std::uint16_t>(at);
}

int SlotMap::covered() const {
    int n = 0;
    for (auto owner : owner_) n += owner != kNoNode;
    return n;
}

// CLUSTER SHARDS: [ [ "slots", [first, last, ...], "nodes", [ [ "id", .., "endpoint", ..,
// "ip", .., "port", .., "tls-port", .., "role", "master", "health", "online" ], ... ] ], ... ]
SlotMap parse_cluster_shards(const Reply& reply, const NodeAddress& asked, bool tls) {
    if (reply.type != Reply::Type::Array) bad_reply("SHARDS");
    SlotMap map;
    for (const auto& shard : reply.elements) {
        if (!shard || shard->type != Reply::Type::Array) bad_reply("SHARDS");
        const Reply* slots = field(*shard, "slots");
        const Reply* nodes = field(*shard, "nodes");
        if (!slots || !nodes || slots->type != Reply::Type::Array || nodes->type != Reply::Type::Array) {
            bad_reply("SHARDS");
        }
        if (slots->elements.empty()) continue;  // a shard that serves nothing
        std::optional<NodeAddress> master;
        for (const auto& node : nodes->elements) {
            if (!node) continue;
            const Reply* role = field(*node, "role");
            const Reply* health = field(*node, "health");
            if (!role || role->str != "master") continue;
            if (health && health->str == "fail") continue;
            const Reply* port = field(*node, tls ? "tls-port" : "port");
            if (!is_integer(port)) port = field(*node, "port");
            if (!is_integer(port) || port->integer < 1 || port->integer > 65535) continue;
            // "?" (cluster-preferred-endpoint-type unknown-endpoint): the address
            // we reached this node on; NULL or empty: the node's ip.
            const Reply* host = field(*node, "endpoint");
            if (!host || host->type == Reply::Type::Nil || host->str.empty()) host = field(*node, "ip");
            master = NodeAddress{endpoint(host, asked), static_cast<int>(port->integer)};
            break;
        }
        if (!master) continue;  // no reachable master: those slots stay uncovered
        if (slots->elements.size() % 2 != 0) bad_reply("SHARDS");
        for (std::size_t i = 0; i + 1 < slots->elements.size(); i += 2) {
            const Reply* first = slots->elements[i].get();
            const Reply* last = slots->elements[i + 1].get();
            if (!is_integer(first) || !is_integer(last)) bad_reply("SHARDS");
            map.assign(static_cast<int>(first->integer), static_cast<int>(last->integer), *master);
        }
    }
    return map;
}

// CLUSTER SLOTS: [ [first, last, [host, port, id, ...] (master), [replica]... ], ... ]
SlotMap parse_cluster_slots(const Reply& reply, const NodeAddress& asked) {
    if (reply.type != Reply::Type::Array) bad_reply("SLOTS");
    SlotMap map;
    for (const auto& range : reply.elements) {
        if (!range || range->type != Reply::Type::Array || range->elements.size() < 3) bad_reply("SLOTS");
        const Reply* first = range->elements[0].get();
        const Reply* last = range->elements[1].get();
        const Reply* master = range->elements[2].get();
        if (!is_integer(first) || !is_integer(last) || !master || master->type != Reply::Type::Array ||
            master->elements.size() < 2 || !is_integer(master->elements[1].get())) {
            bad_reply("SLOTS");
        }
        const long long port = master->elements[1]->integer;
        if (port < 1 || port > 65535) continue;
        map.assign(static_cast<int>(first->integer), static_cast<int>(last->integer),
                   NodeAddress{endpoint(master->elements[0].get(), asked), static_cast<int>(port)});
    }
    return map;
}

std::shared_ptr<const SlotMap> ClusterTopology::map() {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_;
}

void ClusterTopology::replace(SlotMap map) {
    auto fresh = std::make_shared<const SlotMap>(std::move(map));
    std::lock_guard<std::mutex> lock(mutex_);
    map_ = std::move(fresh);
    ++version_;
    stats::bump(stats::Counter::ClusterRefreshes);
}

void ClusterTopology::patch(int slot, const NodeAddress& node) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto copy = std::make_shared<SlotMap>(*map_);
    copy->assign(slot, slot, node);
    map_ = std::move(copy);
    ++version_;
    refresh_wanted_ = true;
}

void ClusterTopology::want_refresh() {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh_wanted_ = true;
}

bool ClusterTopology::take_refresh() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_->empty()) return true;
    const bool wanted = refresh_wanted_;
    refresh_wanted_ = false;
    return wanted;
}

std::uint64_t ClusterTopology::version() {
    std::lock_guard<std::mutex> lock(mutex_);
    return version_;
}

bool ClusterTopology::use_shards() {
    std::lock_guard<std::mutex> lock(mutex_);
    return shards_;
}

void ClusterTopology::shards_unsupported() {
    std::lock_guard<std::mutex> lock(mutex_);
    shards_ = false;
}

void ClusterTopology::suspect(const NodeAddress& node) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::find(suspects_.begin(), suspects_.end(), node) == suspects_.end()) suspects_.push_back(node);
    any_suspect_.store(true, std::memory_order_release);
}

bool ClusterTopology::suspected(const NodeAddress& node) {
    if (!any_suspect_.load(std::memory_order_acquire)) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    return std::find(suspects_.begin(), suspects_.end(), node) != suspects_.end();
}

void ClusterTopology::cleared(const NodeAddress& node) {
    std::lock_guard<std::mutex> lock(mutex_);
    suspects_.erase(std::remove(suspects_.begin(), suspects_.end(), node), suspects_.end());
    any_suspect_.store(!suspects_.empty(), std::memory_order_release);
}

std::vector<NodeAddress> ClusterTopology::refresh_candidates(const std::vector<NodeAddress>& seeds) {
    std::vector<NodeAddress> nodes = map()->nodes();
    for (const auto& seed : seeds) {
        if (std::find(nodes.begin(), nodes.end(), seed) == nodes.end()) nodes.push_back(seed);
    }
    if (any_suspect_.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lock(mutex_);
        std::stable_partition(nodes.begin(), nodes.end(), [&](const NodeAddress& n) {
            return std::find(suspects_.begin(), suspects_.end(), n) == suspects_.end();
        });
    }
    return nodes;
}

std::shared_ptr<ClusterTopology> cluster_topology(const std::string& key) {
    static std::mutex* mutex = new std::mutex();  // live until exit
    static auto* registry = new std::map<std::string, std::shared_ptr<ClusterTopology>>();
    std::lock_guard<std::mutex> lock(*mutex);
    auto& topology = (*registry)[key];
    if (!topology) topology = std::make_shared<ClusterTopology>();
    return topology;
}

}  // namespace rsh
