// One storage call against a Redis Cluster, sans-I/O. The call's commands are
// grouped by slot (a group of more than one command is one MULTI/EXEC), the
// groups of a node go out in one write, and the call runs in phases:
//   set:    phase 1 adds (SET; per metadata key ZREMRANGEBYSCORE, ZADD, EXPIRE NX,
//           EXPIRE GT); phase 2, only when phase 1 fully succeeded, removes and
//           shortens (EXPIRE old stale_ttl LT; per metadata key ZREM old).
//   delete: phase 1 UNLINK; phase 2 the metadata cleanup.
// so that metadata may over-report (a stale member expires by score) but never
// under-reports a live session. When every command falls in one slot (a
// hash-tagged prefix), the call is one phase and one MULTI/EXEC, as on a single node.
//
// A driver asks plan_round() for the node batches, runs each on a connection
// of that node (Operation::start_raw), hands back the replies or the failure,
// then end_round() says whether to refresh the topology, back off, or go on.
// MOVED patches the shared slot map (and asks for one refresh); ASK resends the
// group to the target behind ASKING, without touching the map; TRYAGAIN and
// CLUSTERDOWN back off. Every command sent is idempotent, so a group whose node
// failed before answering is sent again after a refresh. A node that failed a
// round trip is suspect (ClusterTopology::suspect): its next batch is a lone PING,
// and the groups go in the round after its answer.
// An ASK for a group of several keys (keys sharing a slot: a hash-tagged
// prefix) splits the group per key: the source still serves the keys it holds
// and only the missing ones go to the target, so the migration's MIGRATE never
// meets a key we created on the target meanwhile (BUSYKEY). Such a call gives
// up its single transaction for the time of the migration, not its phases.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "keys.hpp"
#include "operation.hpp"
#include "topology.hpp"

namespace rsh {

struct ClusterPolicy {
    int max_redirections = 5;         // MOVED and ASK per call
    int max_connection_attempts = 3;  // failed sends to a group's node per call
    Durability durability;            // writes: WAIT at the end of each node batch
};

struct NodeBatch {
    NodeAddress node;
    CommandBuffer commands;           // [ASKING] [MULTI] commands [EXEC], group after group
    std::vector<std::size_t> groups;  // indexes into the operation's groups
    bool probe = false;               // a lone PING to a suspect node: the groups wait for its answer
};

struct RoundOutcome {
    bool finished = false;
    bool refresh = false;   // ask the cluster for its slots before the next round
    int backoff_ms = 0;     // wait this long before the next round
};

class ClusterOperation {
public:
    // Splits the call loaded into op (by load_operation) into slot groups and phases.
    // `loaded` stays as it is (not trimmed) until the call is finished: a server
    // refusing the Redis 7.0 forms makes the call build its commands again from it.
    void start(const Operation& loaded, const KeyNaming& naming, std::shared_ptr<ClusterTopology> topology,
               ClusterPolicy policy);

    // The next round's batches, one per node; false when the call is finished.
    bool plan_round();
    std::vector<NodeBatch>& batches() { return batches_; }
    // Replies of batch i, in order (all of them: the count its commands ask for).
    void node_replies(std::size_t batch, std::vector<ReplyPtr>& replies);
    // Batch i could not be sent or answered (connection error, timeout).
    void node_failed(std::size_t batch, const std::string& error, bool retryable);
    RoundOutcome end_round();

    // Ends the call with err (the driver's retry budget ran out, a refresh failed).
    void fail(std::string err);
    // The error that made the call retry last ("" when none).
    const std::string& last_retry_error() const { return last_retry_error_; }

    bool finished() const { return finished_; }
    const Result& result() const { return result_; }
    Result& result() { return result_; }
    int phase_count() const { return static_cast<int>(phases_.size()); }
    // Frees what the call built (every group's and batch's commands, a large
    // value): a reused cluster operation keeps no large call's memory. After
    // the result was read.
    void trim() noexcept;

private:
    enum class Answer { Value, Ok };
    struct Part {  // one key's commands within a group
        std::string key;
        CommandBuffer commands;
    };
    struct Group {
        int slot = 0;
        std::size_t count = 0;  // commands in its parts (each encoded once, in its part)
        std::vector<Part> parts;
        std::optional<NodeAddress> ask;  // ASK target for the next send
        bool done = false;
        bool pending_send = true;
        int connection_failures = 0;
    };
    enum class Verdict { Done, Retry, Failed };

    // Adds a command of key (in slot, its key_slot) to its group of the phase.
    void add(std::size_t phase, std::string_view key, int slot, std::initializer_list<std::string_view> args);
    Verdict judge(Group& group, std::vector<ReplyPtr>& replies, std::size_t& at);
    Verdict redirect(Group& group, const std::string& error);
    bool split_by_key(std::size_t index);
    bool waits() const { return answer_ == Answer::Ok && policy_.durability.enabled(); }
    void take_value(Reply& reply);
    void probe_answered(const NodeBatch& batch, const Reply& reply);

    std::vector<std::vector<Group>> phases_;
    std::size_t phase_ = 0;
    std::vector<NodeBatch> batches_;
    // Records why this round asks for another one.
    void will_retry(const std::string& error);
    // The call's groups and phases from the loaded operation, in the command forms
    // of the cluster's version.
    void build();

    std::vector<std::size_t> to_split_;  // groups that got ASK with several keys
    std::size_t merged_tail_ = 0;  // parts of the remove phase folded into a one-slot call (the last ones)
    // Groups, parts, phase vectors and node batches of earlier calls, emptied
    // with their buffers kept: a call like the one before allocates nothing.
    std::vector<Group> spare_groups_;
    std::vector<Part> spare_parts_;
    std::vector<std::vector<Group>> spare_phases_;
    std::vector<NodeBatch> spare_batches_;
    void recycle_phases();
    void recycle_batches();
    std::shared_ptr<ClusterTopology> topology_;
    ClusterPolicy policy_;
    const Operation* loaded_ = nullptr;  // the call's arguments (the driver's, outliving the call)
    const KeyNaming* naming_ = nullptr;
    bool built_for_redis7_ = true;
    bool rebuild_ = false;  // a server refused the Redis 7.0 forms: build again
    int rounds_ = 0;
    Answer answer_ = Answer::Ok;
    int redirections_ = 0;
    bool split_ = false;
    bool refresh_ = false;
    int backoffs_ = 0;
    bool backoff_ = false;
    std::string last_retry_error_;
    bool retrying_ = false;  // this round asked for another (counted once per round)
    bool finished_ = false;
    Result result_;
    std::string key_, meta_key_;
    std::string_view marking_;  // while build() adds a set's large value: the value (CommandBuffer::mark)
};

}  // namespace rsh
