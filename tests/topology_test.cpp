// CLUSTER SHARDS / CLUSTER SLOTS parsing from RESP bytes, MOVED/ASK addresses,
// and the shared map's patch/refresh rules.
#include <gtest/gtest.h>

#include <string>

#include "errors.hpp"
#include "resp.hpp"
#include "topology.hpp"

namespace {

using rsh::NodeAddress;

rsh::ReplyPtr parse(const std::string& bytes) {
    rsh::ReplyReader reader;
    reader.feed(bytes.data(), bytes.size());
    auto reply = reader.next();
    EXPECT_TRUE(reply);
    return reply;
}

std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }
std::string num(long long n) { return ":" + std::to_string(n) + "\r\n"; }
std::string arr(int n) { return "*" + std::to_string(n) + "\r\n"; }

std::string shard_node(const std::string& endpoint, int port, const std::string& role,
                       const std::string& health = "online", int tls_port = 0) {
    std::string out = arr(tls_port ? 14 : 12) + bulk("id") + bulk("abc") + bulk("port") + num(port);
    if (tls_port) out += bulk("tls-port") + num(tls_port);
    out += bulk("ip") + bulk("127.0.0.1") + bulk("endpoint") +
           (endpoint == "NULL" ? std::string("$-1\r\n") : bulk(endpoint)) + bulk("role") + bulk(role) +
           bulk("health") + bulk(health);
    return out;
}

TEST(Topology, ParsesClusterShards) {
    const std::string bytes = arr(2) +
        arr(4) + bulk("slots") + arr(4) + num(0) + num(100) + num(200) + num(300) + bulk("nodes") + arr(2) +
            shard_node("10.0.0.2", 7001, "replica") + shard_node("10.0.0.1", 7000, "master") +
        arr(4) + bulk("slots") + arr(2) + num(101) + num(199) + bulk("nodes") + arr(1) +
            shard_node("?", 7002, "master");
    const auto map = rsh::parse_cluster_shards(*parse(bytes), NodeAddress{"seed.example", 6379}, false);
    ASSERT_NE(map.node_for(0), nullptr);
    EXPECT_EQ(map.node_for(0)->text(), "10.0.0.1:7000");
    EXPECT_EQ(map.node_for(250)->text(), "10.0.0.1:7000");
    EXPECT_EQ(map.node_for(150)->text(), "seed.example:7002");  // "?": the node we asked
    EXPECT_EQ(map.node_for(301), nullptr);
    EXPECT_EQ(map.covered(), 101 + 101 + 99);
}

TEST(Topology, ShardsNullEndpointFallsBackToIpAndTlsPortIsPickedForTls) {
    const std::string bytes = arr(1) + arr(4) + bulk("slots") + arr(2) + num(0) + num(16383) + bulk("nodes") +
                              arr(1) + shard_node("NULL", 7000, "master", "online", 7400);
    const auto reply = parse(bytes);
    EXPECT_EQ(rsh::parse_cluster_shards(*reply, NodeAddress{"seed", 1}, false).node_for(5)->text(), "127.0.0.1:7000");
    EXPECT_EQ(rsh::parse_cluster_shards(*reply, NodeAddress{"seed", 1}, true).node_for(5)->text(), "127.0.0.1:7400");
}

TEST(Topology, ShardsSkipFailedMasters) {
    const std::string bytes = arr(1) + arr(4) + bulk("slots") + arr(2) + num(0) + num(16383) + bulk("nodes") +
                              arr(1) + shard_node("10.0.0.1", 7000, "master", "fail");
    EXPECT_TRUE(rsh::parse_cluster_shards(*parse(bytes), NodeAddress{"seed", 1}, false).empty());
}

TEST(Topology, ParsesClusterSlotsWithUnknownEndpoints) {
    const std::string bytes = arr(3) +
        arr(4) + num(0) + num(5460) + arr(3) + bulk("10.0.0.1") + num(7000) + bulk("id1") +
            arr(3) + bulk("10.0.0.4") + num(7003) + bulk("id4") +
        arr(3) + num(5461) + num(10922) + arr(3) + bulk("?") + num(7001) + bulk("id2") +
        arr(3) + num(10923) + num(16383) + arr(3) + std::string("$-1\r\n") + num(7002) + bulk("id3");
    const auto map = rsh::parse_cluster_slots(*parse(bytes), NodeAddress{"seed", 6379});
    EXPECT_EQ(map.node_for(0)->text(), "10.0.0.1:7000");
    EXPECT_EQ(map.node_for(6000)->text(), "seed:7001");
    EXPECT_EQ(map.node_for(16383)->text(), "seed:7002");
    EXPECT_EQ(map.covered(), 16384);
    EXPECT_EQ(map.nodes().size(), 3u);
}

TEST(Topology, WrongShapesAreProtocolErrors) {
    EXPECT_THROW(rsh::parse_cluster_slots(*parse("-ERR nope\r\n"), NodeAddress{}), rsh::ProtocolError);
    EXPECT_THROW(rsh::parse_cluster_slots(*parse(arr(1) + num(3)), NodeAddress{}), rsh::ProtocolError);
    EXPECT_THROW(rsh::parse_cluster_shards(*parse(arr(1) + arr(2) + bulk("slots") + num(1)), NodeAddress{}, false),
                 rsh::ProtocolError);
}

TEST(Topology, RedirectionAddresses) {
    const NodeAddress asked{"10.0.0.9", 7000};
    EXPECT_EQ(rsh::parse_node_address("127.0.0.1:7001", asked)->text(), "127.0.0.1:7001");
    EXPECT_EQ(rsh::parse_node_address("::1:7001", asked)->host, "::1");
    EXPECT_EQ(rsh::parse_node_address("[::1]:7001", asked)->host, "::1");
    EXPECT_EQ(rsh::parse_node_address(":7001", asked)->host, "10.0.0.9");  // empty endpoint
    EXPECT_EQ(rsh::parse_node_address("?:7001", asked)->host, "10.0.0.9");
    EXPECT_FALSE(rsh::parse_node_address("nohost", asked));
    EXPECT_FALSE(rsh::parse_node_address("h:0", asked));
    EXPECT_FALSE(rsh::parse_node_address("h:70000", asked));
}

TEST(Topology, PatchAsksForExactlyOneRefresh) {
    rsh::ClusterTopology topology;
    EXPECT_TRUE(topology.take_refresh());  // empty map: always
    rsh::SlotMap map;
    map.assign(0, 16383, NodeAddress{"a", 1});
    topology.replace(map);
    EXPECT_FALSE(topology.take_refresh());
    topology.patch(42, NodeAddress{"b", 2});
    topology.patch(43, NodeAddress{"b", 2});
    EXPECT_EQ(topology.map()->node_for(42)->text(), "b:2");
    EXPECT_EQ(topology.map()->node_for(44)->text(), "a:1");
    EXPECT_TRUE(topology.take_refresh());
    EXPECT_FALSE(topology.take_refresh());
}

}  // namespace

TEST(ClusterTopology, RefreshAsksSuspectNodesLast) {
    rsh::ClusterTopology topology;
    const rsh::NodeAddress a{"a", 1}, b{"b", 2}, seed{"s", 3};
    rsh::SlotMap map;
    map.assign(0, 8000, a);
    map.assign(8001, 16383, b);
    topology.replace(map);
    EXPECT_EQ(topology.refresh_candidates({seed, a}), (std::vector<rsh::NodeAddress>{a, b, seed}));
    topology.suspect(a);
    EXPECT_TRUE(topology.suspected(a));
    EXPECT_FALSE(topology.suspected(b));
    EXPECT_EQ(topology.refresh_candidates({seed, a}), (std::vector<rsh::NodeAddress>{b, seed, a}));
    topology.cleared(a);
    EXPECT_FALSE(topology.suspected(a));
    EXPECT_EQ(topology.refresh_candidates({seed}), (std::vector<rsh::NodeAddress>{a, b, seed}));
}
