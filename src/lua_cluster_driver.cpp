#include "lua_cluster_driver.hpp"

#include "errors.hpp"
#include "lua_cluster.hpp"
#include "lua_instance.hpp"
#include "lua_operation.hpp"
#include "lua_stats.hpp"
#include "lua_util.hpp"

namespace rsh {
namespace {

// A cosocket call's cluster operation with the arguments it was loaded from,
// and the meter that times the call from cop:begin to its results.
struct DriverOperation {
    Operation loader;
    ClusterOperation op;
    stats::CallMeter meter;
    bool holds_value = false;  // its environment holds the call's set value (hold_call_value)

    // Once the call ended: neither keeps a large call's memory. (Not before: a
    // call built again, see ClusterOperation::start, reads the loader's arguments.)
    void trim() noexcept {
        op.trim();
        loader.trim();
    }
};

DriverOperation* check_driver_op(lua_State* L, int idx) {
    return static_cast<DriverOperation*>(luaL_checkudata(L, idx, kClusterOperationType));
}

void push_view(lua_State* L, std::string_view bytes) { lua_pushlstring(L, bytes.data(), bytes.size()); }

NodeAddress node_arg(lua_State* L, int idx) {
    std::size_t len = 0;
    const char* host = luaL_checklstring(L, idx, &len);
    return NodeAddress{std::string(host, len), static_cast<int>(luaL_checkinteger(L, idx + 1))};
}

// --- cluster instance ------------------------------------------------------------

// cinst:node(host, port) -> a single-node core instance for that node: its
// handshake and its pool (named by node and identity, under a custom pool too).
int cluster_node(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    const NodeAddress node = node_arg(L, 2);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const NodeTarget& target = self->client.target(node);
        Config config = target.config;
        config.pool = target.pool_name;
        push_object<Instance>(L, kInstanceType, std::move(config));
        return 1;
    });
}

// cinst:take_refresh() -> true when this caller should load the slot map now.
int cluster_take_refresh(lua_State* L) {
    lua_pushboolean(L, check_cluster(L, 1)->client.topology()->take_refresh());
    return 1;
}

int cluster_want_refresh(lua_State* L) {
    check_cluster(L, 1)->client.topology()->want_refresh();
    return 0;
}

// cinst:refresh_candidates() -> { host1, port1, host2, port2, ... }: the known
// masters, then the seeds, suspect nodes last.
int cluster_refresh_candidates(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const std::vector<NodeAddress> nodes =
            self->client.topology()->refresh_candidates(self->client.config().nodes);
        lua_createtable(L, static_cast<int>(nodes.size() * 2), 0);
        int i = 0;
        for (const auto& node : nodes) {
            push_view(L, node.host);
            lua_rawseti(L, -2, ++i);
            lua_pushinteger(L, node.port);
            lua_rawseti(L, -2, ++i);
        }
        return 1;
    });
}

// cinst:load_topology_query(op) -> request: CLUSTER SHARDS (or SLOTS once a node
// refused SHARDS) as a raw round trip of op.
int cluster_load_topology_query(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    Operation* op = check_operation(L, 2);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        CommandBuffer query;
        if (self->client.topology()->use_shards()) query.add({"CLUSTER", "SHARDS"}); else query.add({"CLUSTER", "SLOTS"});
        op->start_raw(query);
        push_view(L, *op->next_request(0));
        return 1;
    });
}

// cinst:absorb_topology(op, host, port) -> true (map replaced) | false (ask the
// same node again: it does not know CLUSTER SHARDS) | nil, err
int cluster_absorb_topology(lua_State* L) {
    ClusterInstance* self = check_cluster(L, 1);
    Operation* op = check_operation(L, 2);
    const NodeAddress asked = node_arg(L, 3);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const TrimOnExit trim(*op);  // the replies are parsed into the map
        auto& topology = *self->client.topology();
        const bool shards = topology.use_shards();
        if (!op->finished() || op->raw_replies().empty()) throw ProtocolError("protocol error: no reply");
        const Reply& reply = *op->raw_replies().front();
        if (reply.is_error()) {
            if (shards) {
                topology.shards_unsupported();
                lua_pushboolean(L, 0);
                return 1;
            }
            throw IoError(reply.str);
        }
        SlotMap map = shards ? parse_cluster_shards(reply, asked, self->client.config().base.ssl)
                             : parse_cluster_slots(reply, asked);
        if (map.empty()) throw IoError("CLUSTERDOWN the cluster serves no slot");
        topology.replace(std::move(map));
        lua_pushboolean(L, 1);
        return 1;
    });
}

int cluster_retry_budget(lua_State* L) {
    lua_pushnumber(L, check_cluster(L, 1)->client.config().retry_budget_ms());
    return 1;
}

int cluster_map_empty(lua_State* L) {
    lua_pushboolean(L, check_cluster(L, 1)->client.topology()->map()->empty());
    return 1;
}

// --- cluster operation -------------------------------------------------------------

int driver_op_new(lua_State* L) {
    push_object<DriverOperation>(L, kClusterOperationType);
    lua_createtable(L, 1, 0);  // [1]: the call's set value, for the batch that carries it
    lua_setfenv(L, -2);
    return 1;
}

// The cluster operation self, at stack index 1, holds the call's set value (at
// value_index), or lets go of it (0; nothing to do unless it holds one).
void hold_call_value(lua_State* L, DriverOperation* self, int value_index) {
    if (value_index == 0 && !self->holds_value) return;
    lua_getfenv(L, 1);
    if (value_index > 0) lua_pushvalue(L, value_index); else lua_pushnil(L);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 1);
    self->holds_value = value_index > 0;
}

// Loads `batch` into op (at stack index op_index; the cluster operation at 1) as
// a raw round trip -> request, host, port. The batch that carries a set's large
// value sends it from the caller's string (push_request).
int push_loaded(lua_State* L, int op_index, Operation& op, const NodeBatch& batch) {
    op.start_raw(batch.commands);
    const std::string_view request = *op.next_request(0);
    if (op.value_offset() != CommandBuffer::kNone) {
        lua_getfenv(L, 1);
        lua_rawgeti(L, -1, 1);
        hold_request_value(L, op_index, lua_gettop(L));
        lua_pop(L, 2);
    }
    push_request(L, op_index, op, request);
    push_view(L, batch.node.host);
    lua_pushinteger(L, batch.node.port);
    return 3;
}

// cop:begin(cinst, op, method_id, ...): cop:start, then as much of the first
// round as needs no I/O, so that a call to one node crosses into C here, in op's
// reads and in cop:finish only:
//   request, host, port   the round is one node batch, loaded into op
//   false, n              the round is planned: n node batches (load_batch them)
//   false                 the slot map is to be loaded first (then cop:plan)
//   nil, "invalid <arg>: <why>"
int driver_op_begin(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    ClusterInstance* inst = check_cluster(L, 2);
    Operation* op = check_operation(L, 3);
    const lua_Integer method = lua_tointeger(L, 4);
    start_meter(self->meter, method);
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (method < 1 || method > 4) throw ArgumentError("invalid method");
        // (the loader is trimmed when the call ends: see DriverOperation::trim)
        load_operation(L, self->loader, static_cast<Method>(method), inst->naming, 5,
                       inst->client.config().base.reader_limits().max_reply_bytes);
        const SetArgs* set = self->loader.set_args();
        if (set && set->value.size() >= Operation::kSeparateValue) hold_call_value(L, self, 7);  // name, key, value from 5
        self->op.start(self->loader, inst->naming, inst->client.topology(), inst->client.policy());
        if (inst->client.topology()->take_refresh()) {
            lua_pushboolean(L, 0);
            return 1;
        }
        self->op.plan_round();  // (a call that finished already plans no batch: 0)
        auto& batches = self->op.batches();
        if (batches.size() != 1) {
            lua_pushboolean(L, 0);
            lua_pushinteger(L, static_cast<lua_Integer>(batches.size()));
            return 2;
        }
        return push_loaded(L, 3, *op, batches.front());
    });
    if (n == 2 && lua_isnil(L, -2)) {
        self->trim();  // refused: the call ends here
        return finish_meter(L, self->meter, n);
    }
    return n;
}

// cop:finish(op): after a round of one node batch whose replies op holds:
// absorb, end_round and, once the call is finished, result:
//   true, results...            finished (op and cop trimmed)
//   false, refresh, backoff_ms  another round is needed (as end_round says)
int driver_op_finish(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    Operation* op = check_operation(L, 2);
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (self->op.batches().size() != 1 || !op->finished()) throw ArgumentError("invalid batch");
        self->op.node_replies(0, op->raw_replies());
        op->trim();
        const RoundOutcome outcome = self->op.end_round();
        if (!outcome.finished) {
            lua_pushboolean(L, 0);
            lua_pushboolean(L, outcome.refresh);
            lua_pushinteger(L, outcome.backoff_ms);
            return 3;
        }
        lua_pushboolean(L, 1);
        const int n = push_result(L, self->op.result());
        self->trim();
        return 1 + n;
    });
    if (n == 2 && lua_isnil(L, -2)) return finish_meter(L, self->meter, n);  // a broken reply
    if (lua_toboolean(L, -n)) {                                               // finished
        finish_meter(L, self->meter, n - 1);
        hold_call_value(L, self, 0);
    }
    return n;
}

// cop:plan() -> the number of node batches of the next round (0: none this
// round, e.g. no node serves a slot: end_round says how long to wait), or
// false when the call is finished.
int driver_op_plan(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (self->op.plan_round()) {
            lua_pushinteger(L, static_cast<lua_Integer>(self->op.batches().size()));
        } else {
            lua_pushboolean(L, 0);
        }
        return 1;
    });
}

// cop:load_batch(i, op) -> request, host, port: batch i as a raw round trip of op.
int driver_op_load_batch(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    const auto i = static_cast<std::size_t>(luaL_checkinteger(L, 2));
    Operation* op = check_operation(L, 3);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        auto& batches = self->op.batches();
        if (i < 1 || i > batches.size()) throw ArgumentError("invalid batch");
        return push_loaded(L, 3, *op, batches[i - 1]);
    });
}

// cop:absorb(i, op): batch i's replies, from a finished raw op.
int driver_op_absorb(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    const auto i = static_cast<std::size_t>(luaL_checkinteger(L, 2));
    Operation* op = check_operation(L, 3);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (i < 1 || i > self->op.batches().size() || !op->finished()) throw ArgumentError("invalid batch");
        self->op.node_replies(i - 1, op->raw_replies());
        op->trim();
        return 0;
    });
}

// cop:failed(i, err, retryable)
int driver_op_failed(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    const auto i = static_cast<std::size_t>(luaL_checkinteger(L, 2));
    const std::string err = luaL_optstring(L, 3, "closed");
    const bool retryable = lua_toboolean(L, 4) != 0;
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (i < 1 || i > self->op.batches().size()) throw ArgumentError("invalid batch");
        self->op.node_failed(i - 1, err, retryable);
        return 0;
    });
}

// cop:end_round() -> finished, refresh, backoff_ms
int driver_op_end_round(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    const RoundOutcome outcome = self->op.end_round();
    lua_pushboolean(L, outcome.finished);
    lua_pushboolean(L, outcome.refresh);
    lua_pushinteger(L, outcome.backoff_ms);
    return 3;
}

// cop:fail(err): ends the call (err nil: the error that made it retry last).
int driver_op_fail(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    std::string err = lua_isnoneornil(L, 2) ? self->op.last_retry_error() : to_string(L, 2);
    if (err.empty()) err = "timeout";
    self->op.fail(std::move(err));
    return 0;
}

// cop:result() -> the storage method's results.
int driver_op_result(lua_State* L) {
    DriverOperation* self = check_driver_op(L, 1);
    hold_call_value(L, self, 0);
    return finish_meter(L, self->meter, lua_barrier(L, OnError::ReturnNilErr, [&] {
        const int n = push_result(L, self->op.result());
        self->trim();
        return n;
    }));
}

const luaL_Reg kDriverOperationMethods[] = {
    {"begin", driver_op_begin},
    {"finish", driver_op_finish},
    {"plan", driver_op_plan},
    {"load_batch", driver_op_load_batch},
    {"absorb", driver_op_absorb},
    {"failed", driver_op_failed},
    {"end_round", driver_op_end_round},
    {"fail", driver_op_fail},
    {"result", driver_op_result},
    {nullptr, nullptr},
};

}  // namespace

const luaL_Reg kClusterDriverMethods[] = {
    {"node", cluster_node},
    {"take_refresh", cluster_take_refresh},
    {"want_refresh", cluster_want_refresh},
    {"refresh_candidates", cluster_refresh_candidates},
    {"load_topology_query", cluster_load_topology_query},
    {"absorb_topology", cluster_absorb_topology},
    {"retry_budget", cluster_retry_budget},
    {"map_empty", cluster_map_empty},
    {nullptr, nullptr},
};

void register_cluster_driver(lua_State* L) {
    luaL_newmetatable(L, kClusterOperationType);
    lua_newtable(L);
    luaL_register(L, nullptr, kDriverOperationMethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc_object<DriverOperation>);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, driver_op_new);
    lua_setfield(L, -2, "cluster_operation");
}

}  // namespace rsh
