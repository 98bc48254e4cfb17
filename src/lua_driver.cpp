#include "lua_driver.hpp"

#include "errors.hpp"
#include "lua_instance.hpp"
#include "lua_operation.hpp"
#include "lua_stats.hpp"
#include "lua_util.hpp"
#include "session_client.hpp"
#include "session_state.hpp"

namespace rsh {
namespace {

// The status op:read() answers with (see docs/core-api.md).
enum ReadStatus { kNeedMore = 0, kDone = 1, kNextRound = 2, kRefused = 3 };

// What a cosocket connection needs: a new one is set up from scratch; a pooled
// one is assumed set up by a configuration of the same pool (getreusedtimes()).
HandshakeArgs cosocket_handshake(const Config& config, bool fresh) {
    return handshake_args(config, fresh ? SessionState{} : SessionState::pooled_for(config));
}

void push_view(lua_State* L, std::string_view bytes) { lua_pushlstring(L, bytes.data(), bytes.size()); }

// --- instance ----------------------------------------------------------------

int instance_pool_name(lua_State* L) {
    Instance* self = check_instance(L, 1);
    push_view(L, self->pool_name);
    return 1;
}

int instance_cosocket_target(lua_State* L) {
    Instance* self = check_instance(L, 1);
    const Config& c = self->config;
    if (c.socket) {
        return lua_barrier(L, OnError::Raise, [&] {
            const std::string target = "unix:" + normalize_socket_path(*c.socket);
            return protected_push(L, [&](lua_State* state) { push_view(state, target); return 1; });
        });
    }
    push_view(L, c.host);
    lua_pushinteger(L, c.port);
    return 2;
}

// A lone PING: a round trip that the server answers only once it has read what
// waited in its sockets (a sentinel front asks it of a server that timed out
// before it routes a write there again).
const CommandBuffer& ping_command() {
    static const CommandBuffer* ping = [] {
        auto* buffer = new CommandBuffer();  // lives until exit
        buffer->add({"PING"});
        return buffer;
    }();
    return *ping;
}

// inst:load_probe(op) -> request: the PING as a raw round trip of op (cosockets).
int instance_load_probe(lua_State* L) {
    check_instance(L, 1);
    Operation* op = check_operation(L, 2);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        op->start_raw(ping_command());
        push_view(L, *op->next_request(0));
        return 1;
    });
}

// inst:probe() -> true | nil, err: the PING over the native transport (any
// answer, an error reply included, is an answer).
int instance_probe(lua_State* L) {
    Instance* self = check_instance(L, 1);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        Operation& op = self->native_op;
        const TrimOnExit trim(op);
        op.start_raw(ping_command());
        const Result result = execute(self->config, self->pool_name, op);
        if (op.finished() && !op.handshake_failed()) {
            lua_pushboolean(L, 1);
            return 1;
        }
        return protected_push(L, [&](lua_State* state) {
            lua_pushnil(state);
            push_view(state, result.text);
            return 2;
        });
    });
}

// inst:check_call(method_id, ...) -> started | nil, "invalid <arg>: <why>": the
// arguments validated as a call would load them, nothing built to send; for a
// front that must refuse bad input before it asks anyone anything (sentinel).
// The call is counted from here: `started` is its start on the stats clock (0
// when counting is off), for core.stats_record once the call has its results;
// a refused call is counted at once.
int instance_check_call(lua_State* L) {
    Instance* self = check_instance(L, 1);
    const lua_Integer method = lua_tointeger(L, 2);
    stats::CallMeter meter;
    start_meter(meter, method);
    const double started = meter.running() ? meter.started_ms() : 0;
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (method < 1 || method > 4) throw ArgumentError("invalid method");
        Operation& scratch = self->native_op;
        load_operation(L, scratch, static_cast<Method>(method), self->naming, 3,
                       self->config.reader_limits().max_reply_bytes);
        scratch.trim();
        lua_pushnumber(L, started);
        return 1;
    });
    if (n == 2) finish_meter(L, meter, n);  // refused
    return n;
}

// inst:set_metered(on): whether this instance's storage calls are counted as
// calls in stats (the sentinel front counts its calls itself, around its data
// instances' calls).
int instance_set_metered(lua_State* L) {
    check_instance(L, 1)->metered = lua_toboolean(L, 2) != 0;
    return 0;
}

// A handshake on a round trip of its own (a pool's first connection in a worker).
int instance_prepare_handshake(lua_State* L) {
    Instance* self = check_instance(L, 1);
    const bool fresh = lua_toboolean(L, 2) != 0;
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        const HandshakeArgs args = cosocket_handshake(self->config, fresh);
        auto op = Operation::handshake(args);
        if (!op) {
            lua_pushnil(L);
            return 1;
        }
        push_object<MeteredOperation>(L, kOperationType, std::move(*op))->set_reader_limits(self->config.reader_limits());
        return 1;
    });
}

// --- operation: the hot path ------------------------------------------------------

int operation_new(lua_State* L) {
    push_object<MeteredOperation>(L, kOperationType);
    lua_createtable(L, 3, 0);  // the request pieces (push_request)
    lua_setfenv(L, -2);
    return 1;
}

// op:start(inst, method_id, server_version, ...) -> request | nil, "invalid <arg>: <why>"
// The call of a metered instance is timed from its first start (a retry keeps
// it) until its result is read or op:failed tells how it failed.
int operation_start(lua_State* L) {
    MeteredOperation* op = check_operation(L, 1);
    Instance* inst = check_instance(L, 2);
    const lua_Integer method = lua_tointeger(L, 3);
    const long version = static_cast<long>(lua_tonumber(L, 4));
    if (inst->metered) start_meter(op->meter, method);
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (method < 1 || method > 4) throw ArgumentError("invalid method");
        const ReaderLimits limits = inst->config.reader_limits();
        load_operation(L, *op, static_cast<Method>(method), inst->naming, 5, limits.max_reply_bytes);
        op->set_reader_limits(limits);
        op->set_durability(inst->config.durability());
        const std::string_view request = *op->next_request(version);
        if (op->value_offset() != CommandBuffer::kNone) {
            hold_request_value(L, 1, 7);  // set's value: load_operation read name, key, value from 5
        }
        push_request(L, 1, *op, request);
        return 1;
    });
    return n == 2 ? finish_meter(L, op->meter, n) : n;
}

// op:prefix_handshake(inst, fresh) -> the request with the handshake in front,
// or false when the connection needs none.
int operation_prefix_handshake(lua_State* L) {
    Operation* op = check_operation(L, 1);
    Instance* inst = check_instance(L, 2);
    const bool fresh = lua_toboolean(L, 3) != 0;
    std::string_view request;  // in op: outlives the handshake's arguments
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        const HandshakeArgs args = cosocket_handshake(inst->config, fresh);
        if (args.sends_nothing()) {
            lua_pushboolean(L, 0);
            return 1;
        }
        request = op->prefix_handshake(args);
        return 0;
    });
    if (n != 0) return n;
    push_request(L, 1, *op, request);  // no C++ object left to leak should it raise
    return 1;
}

// Pushes what op:read / op:read_from answer once the replies are all in.
int push_done(lua_State* L, MeteredOperation* op) {
    if (!op->finished()) {
        lua_pushinteger(L, kNextRound);
        push_request(L, 1, *op, *op->next_request(0));  // later rounds keep the first one's version
        return 2;
    }
    if (op->value_offset() != CommandBuffer::kNone) forget_request_value(L, 1);
    lua_pushinteger(L, op->handshake_failed() ? kRefused : kDone);
    const Result& result = op->result();
    if (result.kind == Result::Kind::Error) op->meter.fail(result.text); else op->meter.succeed();
    const int n = push_result(L, result);
    if (!op->is_raw()) op->trim();  // a raw op's replies are still to be read (cop:absorb trims it)
    return 1 + n;
}

// op:read(data) -> 0 (more bytes needed) | 1, results... | 2, next request |
// 3, nil, err (handshake refused: close the connection) | nil, "protocol error: ..."
int operation_read(lua_State* L) {
    MeteredOperation* op = check_operation(L, 1);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 2, &len);
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (!op->feed(data, len)) {
            lua_pushinteger(L, kNeedMore);
            return 1;
        }
        return push_done(L, op);
    });
    return n == 2 && lua_isnil(L, -2) ? finish_meter(L, op->meter, n) : n;  // a broken reply
}

// op:read_from(reader, data) -> as op:read, from a connection's shared reader
// (auto-pipelining: the replies of several operations arrive in one stream);
// data, when given, is fed to the reader first.
int operation_read_from(lua_State* L) {
    MeteredOperation* op = check_operation(L, 1);
    ReplyReader* reader = static_cast<ReplyReader*>(luaL_checkudata(L, 2, kReaderType));
    std::size_t len = 0;
    const char* data = lua_isnoneornil(L, 3) ? nullptr : luaL_checklstring(L, 3, &len);
    const int n = lua_barrier(L, OnError::ReturnNilErr, [&] {
        if (data) reader->feed(data, len);
        if (!op->take_replies(*reader)) {
            lua_pushinteger(L, kNeedMore);
            return 1;
        }
        return push_done(L, op);
    });
    return n == 2 && lua_isnil(L, -2) ? finish_meter(L, op->meter, n) : n;  // a broken reply
}

// op:trim(): after a failed call (a done one trims itself), so that a reused
// operation keeps no large value, request or reply.
int operation_trim(lua_State* L) {
    check_operation(L, 1)->trim();
    forget_request_value(L, 1);
    return 0;
}

// op:failed(err): the call failed in the driver (connect, timeout, closed...):
// its meter counts it. Nothing else changes (a lent operation is still read).
int operation_failed(lua_State* L) {
    MeteredOperation* op = check_operation(L, 1);
    std::size_t len = 0;
    const char* err = lua_tolstring(L, 2, &len);
    op->meter.fail(err ? std::string_view(err, len) : std::string_view("closed"));
    return 0;
}

int operation_learned_version(lua_State* L) {
    lua_pushnumber(L, static_cast<lua_Number>(check_operation(L, 1)->learned_version()));
    return 1;
}

// --- operation: one round trip at a time (the standalone handshake) ------------

int operation_request(lua_State* L) {
    Operation* op = check_operation(L, 1);
    const long version = static_cast<long>(luaL_optnumber(L, 2, 0));
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        auto request = op->next_request(version);
        if (request) push_view(L, *request); else lua_pushnil(L);
        return 1;
    });
}

int operation_feed(lua_State* L) {
    Operation* op = check_operation(L, 1);
    std::size_t len = 0;
    const char* data = luaL_checklstring(L, 2, &len);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        lua_pushboolean(L, op->feed(data, len));
        return 1;
    });
}

int operation_result(lua_State* L) {
    Operation* op = check_operation(L, 1);
    if (!op->finished()) {
        lua_pushnil(L);
        lua_pushliteral(L, "operation not finished");
        return 2;
    }
    return lua_barrier(L, OnError::ReturnNilErr, [&] { return push_result(L, op->result()); });
}

const luaL_Reg kOperationMethods[] = {
    {"start", operation_start},
    {"prefix_handshake", operation_prefix_handshake},
    {"read", operation_read},
    {"read_from", operation_read_from},
    {"learned_version", operation_learned_version},
    {"trim", operation_trim},
    {"failed", operation_failed},
    {"request", operation_request},
    {"feed", operation_feed},
    {"result", operation_result},
    {nullptr, nullptr},
};

// --- reader: a pipelined connection's reply stream -------------------------------

// core.reader([inst]): the limits are those of the instance that opened the connection.
int reader_new(lua_State* L) {
    Instance* inst = lua_isnoneornil(L, 1) ? nullptr : check_instance(L, 1);
    return lua_barrier(L, OnError::ReturnNilErr, [&] {
        push_object<ReplyReader>(L, kReaderType, inst ? inst->config.reader_limits() : ReaderLimits{});
        return 1;
    });
}

// reader:has_pending() -> true when bytes beyond the replies taken are buffered.
int reader_has_pending(lua_State* L) {
    auto* reader = static_cast<ReplyReader*>(luaL_checkudata(L, 1, kReaderType));
    lua_pushboolean(L, reader->has_pending_bytes());
    return 1;
}

const luaL_Reg kReaderMethods[] = {
    {"has_pending", reader_has_pending},
    {nullptr, nullptr},
};

}  // namespace

const luaL_Reg kDriverInstanceMethods[] = {
    {"prepare_handshake", instance_prepare_handshake},
    {"check_call", instance_check_call},
    {"set_metered", instance_set_metered},
    {"pool_name", instance_pool_name},
    {"cosocket_target", instance_cosocket_target},
    {"load_probe", instance_load_probe},
    {"probe", instance_probe},
    {nullptr, nullptr},
};

void register_driver(lua_State* L) {
    register_type<ReplyReader>(L, kReaderType, kReaderMethods);
    lua_pushcfunction(L, reader_new);
    lua_setfield(L, -2, "reader");

    register_type<MeteredOperation>(L, kOperationType, kOperationMethods);
    lua_pushcfunction(L, operation_new);
    lua_setfield(L, -2, "operation");
}

}  // namespace rsh
